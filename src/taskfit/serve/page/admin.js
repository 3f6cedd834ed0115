// taskfit leaderboard page: asks for the admin token, sends it as a bearer header, draws the tables with textContent.
"use strict";

(function () {
  const form = document.getElementById("token-form");
  const token = document.getElementById("token");
  const status = document.getElementById("status");
  token.value = sessionStorage.getItem("taskfit-admin-token") || "";

  function row(cells) {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      td.textContent = cell;
      tr.appendChild(td);
    }
    return tr;
  }

  const signed = (x) => (x >= 0 ? "+" : "") + Math.round(x);

  async function show() {
    status.textContent = "Loading…";
    const response = await fetch("/api/arena/leaderboard", {headers: {"Authorization": "Bearer " + token.value}});
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      status.textContent = (body.error && body.error.message) || ("HTTP " + response.status);
      return;
    }
    sessionStorage.setItem("taskfit-admin-token", token.value);
    const standings = document.getElementById("standings");
    standings.querySelector("caption").textContent = body.votes + " votes; Bradley–Terry with ties, Elo scale; " +
      "95% CIs from " + body.resamples + " bootstrap resamples of the votes";
    standings.querySelector("tbody").replaceChildren(...body.standings.map((s) => row([
      s.name, Math.round(s.rating), "[" + Math.round(s.low) + ", " + Math.round(s.high) + "]", s.votes, s.wins,
      s.losses, s.ties, s.votes ? s.win_rate.toFixed(3) : "–"])));
    standings.hidden = false;
    const pairs = document.getElementById("pairs");
    pairs.querySelector("tbody").replaceChildren(...body.pairs.map((p) => row([
      p.a + " vs " + p.b, p.a_wins + "–" + p.b_wins + "–" + p.ties,
      signed(p.difference) + " [" + signed(p.low) + ", " + signed(p.high) + "]", p.sign_p.toPrecision(3),
      p.significant ? "yes" : "no"])));
    pairs.hidden = false;
    document.getElementById("needed").textContent = "Decided head-to-head votes a sign test needs (two-sided 0.05, " +
      "80% power) when one side truly wins a share w of them: " +
      Object.entries(body.votes_needed).map(([w, n]) => "w = " + w + ": " + n).join(", ");
    status.textContent = "";
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); show(); });
  if (token.value) show();
})();
