// taskfit assistant page: streams answers, shows sources, sends feedback. Every user, model and knowledge-base
// text is set with textContent (never parsed as HTML).
"use strict";

(function () {
  const turns = document.getElementById("turns");
  const form = document.getElementById("ask");
  const input = document.getElementById("question");
  const status = document.getElementById("status");
  let conversation = turns.dataset.conversation || null;
  const criteria = JSON.parse(turns.dataset.criteria || "[]");

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A feedback event is sent until the server acknowledges it (taskfit.postOnce: stored exactly once).
  async function sendFeedback(body, note, url) {
    const saved = await taskfit.postOnce(url || "/api/feedback", body, note);
    if (saved) note.textContent = "Saved. Thank you.";
    return saved !== null;
  }

  function sourcesBlock(item, sources) {
    let details = item.querySelector("details.sources");
    if (!details) {
      details = el("details", "sources");
      details.appendChild(el("summary"));
      details.appendChild(el("ul"));
      item.appendChild(details);
    }
    details.querySelector("summary").textContent = "Sources (" + sources.length + ")";
    const list = details.querySelector("ul");
    list.replaceChildren(...sources.map((s) => el("li", null, s)));
  }

  // A finished answer gets feedback controls; a failed one (an error, or cut by a server restart) only Regenerate.
  function addControls(item) {
    const state = item.dataset.status;
    if (item.querySelector(".feedback") || !item.dataset.turn || (state !== "done" && state !== "failed")) return;
    const turn = item.dataset.turn;
    const box = el("div", "feedback");
    if (state === "failed") {
      const retry = el("button", "regenerate", "Regenerate");
      retry.type = "button";
      retry.addEventListener("click", () => ask(null, turn));
      box.append(retry);
      item.appendChild(box);
      return;
    }
    const note = el("span", "note");
    const up = el("button", "up", "✓ Good");
    up.type = "button"; up.title = "Good answer"; up.setAttribute("aria-label", "good answer");
    const down = el("button", "down", "✗ Bad");
    down.type = "button"; down.title = "Bad answer"; down.setAttribute("aria-label", "bad answer");
    const reason = el("input", "reason");
    reason.type = "text"; reason.placeholder = "Why? (optional)"; reason.maxLength = 2000;
    const better = el("button", "better", "Write a better answer");
    better.type = "button";
    const again = el("button", "regenerate", "Regenerate");
    again.type = "button";
    const pick = el("button", "pick", "Use this answer");
    pick.type = "button";
    const thumb = (kind, button) => async () => {
      const ok = await sendFeedback({turn, kind, reason: reason.value || null}, note);
      if (ok) { up.classList.toggle("chosen", button === up); down.classList.toggle("chosen", button === down); }
    };
    up.addEventListener("click", thumb("up", up));
    down.addEventListener("click", thumb("down", down));
    better.addEventListener("click", () => {
      if (item.querySelector("form.rewrite")) return;
      const rewrite = el("form", "rewrite");
      const area = el("textarea");
      area.rows = 3; area.required = true; area.maxLength = 20000;
      area.value = item.querySelector(".answer").textContent;
      const save = el("button", null, "Save better answer");
      save.type = "submit";
      rewrite.append(area, save);
      rewrite.addEventListener("submit", async (event) => {
        event.preventDefault();
        if (await sendFeedback({turn, kind: "better", text: area.value, reason: reason.value || null}, note)) {
          rewrite.remove();
        }
      });
      box.after(rewrite);
      area.focus();
    });
    again.addEventListener("click", () => ask(null, turn));
    pick.addEventListener("click", () => sendFeedback({turn, kind: "pick"}, note));
    box.append(up, down, reason, better, again, pick, note);
    item.appendChild(box);
    if (criteria.length) item.appendChild(ratingControls(turn, note));
  }

  // Optional ratings on named criteria (taskfit serve --criteria): one good / bad pair per criterion.
  function ratingControls(turn, note) {
    const row = el("div", "ratings");
    for (const criterion of criteria) {
      const group = el("span", "criterion");
      group.dataset.criterion = criterion;
      group.appendChild(el("span", "name", criterion));
      for (const [value, text] of [["good", "✓"], ["bad", "✗"]]) {
        const button = el("button", value, text);
        button.type = "button";
        button.setAttribute("aria-label", criterion + ": " + value);
        button.addEventListener("click", async () => {
          if (await sendFeedback({turn, criterion, value}, note, "/api/rate")) {
            for (const other of group.querySelectorAll("button")) other.classList.toggle("chosen", other === button);
          }
        });
        group.appendChild(button);
      }
      row.appendChild(group);
    }
    return row;
  }

  async function ask(question, regenerate) {
    const item = el("li", "turn");
    item.dataset.status = "generating";
    const q = el("p", "question", question || "");
    const answer = el("p", "answer");
    answer.setAttribute("aria-busy", "true");
    item.append(q, answer);
    turns.appendChild(item);
    status.textContent = "Answering…";
    form.querySelector("button").disabled = true;
    const body = regenerate ? {question: "-", regenerate} : {question, conversation};
    try {
      const response = await fetch("/api/chat", {
        method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
      });
      if (!response.ok) {
        const problem = await response.json().catch(() => ({}));
        throw new Error((problem.error && problem.error.message) || ("HTTP " + response.status));
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      let shown = "";
      let finished = false;
      while (true) {  // read to the end: the server closes the stream right after "done" or "error"
        const {value, done} = await reader.read();
        if (done) break;
        buffer = taskfit.parseEvents(buffer + decoder.decode(value, {stream: true}), (name, data) => {
          if (name === "meta") {
            item.dataset.turn = data.turn;
            if (data.parent) item.dataset.parent = data.parent;
            q.textContent = data.question;
            if (data.notice) item.insertBefore(el("p", "notice", data.notice), answer.nextSibling);
            sourcesBlock(item, data.sources);
            if (conversation !== data.conversation) {
              conversation = data.conversation;
              turns.dataset.conversation = conversation;
              history.replaceState(null, "", "/?c=" + encodeURIComponent(conversation));
              const list = document.getElementById("conversations");
              const none = list.querySelector(".none");
              if (none) none.remove();
              const link = el("a", null, data.question);
              link.href = "/?c=" + encodeURIComponent(conversation);
              link.setAttribute("aria-current", "page");
              const entry = el("li");
              entry.appendChild(link);
              list.prepend(entry);
            }
          } else if (name === "delta") {
            shown += data.text;
            answer.textContent = shown.trimStart();
          } else if (name === "done") {
            answer.textContent = data.answer.trim();
            item.dataset.status = "done";
            finished = true;
          } else if (name === "error") {
            item.dataset.status = "failed";
            item.insertBefore(el("p", "error", data.message), item.querySelector("details"));
            finished = true;
          }
        });
      }
      if (!finished) throw new Error("the connection closed before the answer was complete");
      status.textContent = "";
    } catch (err) {
      item.dataset.status = "failed";
      item.appendChild(el("p", "error", String(err.message || err)));
      status.textContent = "";
    } finally {
      answer.removeAttribute("aria-busy");
      form.querySelector("button").disabled = false;
      addControls(item);
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const question = input.value.trim();
    if (!question) return;
    input.value = "";
    ask(question, null);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  for (const item of turns.querySelectorAll("li.turn")) addControls(item);
})();
