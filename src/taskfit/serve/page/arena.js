// taskfit arena page: one question, two blind answers streaming side by side, one vote; the names are shown only
// after the vote is stored. Every text is set with textContent (never parsed as HTML).
"use strict";

(function () {
  const form = document.getElementById("ask");
  const input = document.getElementById("question");
  const status = document.getElementById("status");
  const battleBox = document.getElementById("battle");
  const asked = document.getElementById("asked");
  const voteBox = battleBox.querySelector(".vote");
  const note = voteBox.querySelector(".note");
  const sides = {};
  for (const section of battleBox.querySelectorAll(".side")) sides[section.dataset.side] = section;
  let battle = null;

  function reset(question) {
    battle = null;
    battleBox.hidden = false;
    voteBox.hidden = true;
    note.textContent = "";
    asked.textContent = question;
    for (const button of voteBox.querySelectorAll("button")) { button.disabled = false; button.classList.remove("chosen"); }
    for (const side of Object.values(sides)) {
      side.dataset.status = "generating";
      side.querySelector(".answer").textContent = "";
      side.querySelector(".answer").setAttribute("aria-busy", "true");
      side.querySelector(".name").textContent = "";
      for (const old of side.querySelectorAll(".error")) old.remove();
    }
  }

  async function ask(question) {
    reset(question);
    status.textContent = "Both models are answering…";
    form.querySelector("button").disabled = true;
    const shown = {a: "", b: ""};
    let ended = false;
    try {
      const response = await fetch("/api/arena", {
        method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({question}),
      });
      if (!response.ok) {
        const problem = await response.json().catch(() => ({}));
        throw new Error((problem.error && problem.error.message) || ("HTTP " + response.status));
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      while (true) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer = taskfit.parseEvents(buffer + decoder.decode(value, {stream: true}), (name, data) => {
          if (name === "meta") {
            battle = data.battle;
            battleBox.dataset.battle = battle;
            asked.textContent = data.question;
          } else if (name === "delta") {
            shown[data.side] += data.text;
            sides[data.side].querySelector(".answer").textContent = shown[data.side].trimStart();
          } else if (name === "done") {
            sides[data.side].querySelector(".answer").textContent = data.answer.trim();
            sides[data.side].dataset.status = "done";
          } else if (name === "error") {
            sides[data.side].dataset.status = "failed";
            sides[data.side].appendChild(Object.assign(document.createElement("p"),
              {className: "error", textContent: data.message}));
          } else if (name === "end") {
            ended = true;
          }
        });
      }
      if (!ended) throw new Error("the connection closed before both answers were complete");
      const bothDone = Object.values(sides).every((s) => s.dataset.status === "done");
      status.textContent = bothDone ? "Which answer is better?" : "An answer failed; ask again.";
      voteBox.hidden = !bothDone;
    } catch (err) {
      status.textContent = String(err.message || err);
    } finally {
      for (const side of Object.values(sides)) side.querySelector(".answer").removeAttribute("aria-busy");
      form.querySelector("button").disabled = false;
    }
  }

  // A vote is sent until the server acknowledges it (taskfit.postOnce: stored exactly once).
  async function vote(winner, button) {
    if (!battle) return;
    const result = await taskfit.postOnce("/api/arena/vote", {battle, winner}, note);
    if (!result) return;
    for (const other of voteBox.querySelectorAll("button")) other.classList.toggle("chosen", other === button);
    sides.a.querySelector(".name").textContent = "Model A: " + result.a;
    sides.b.querySelector(".name").textContent = "Model B: " + result.b;
    note.textContent = "Vote saved. Thank you.";
  }

  for (const button of voteBox.querySelectorAll("button")) {
    button.addEventListener("click", () => vote(button.dataset.winner, button));
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const question = input.value.trim();
    if (!question) return;
    input.value = "";
    ask(question);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
})();
