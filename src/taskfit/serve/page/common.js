// What the chat page and the arena share (loaded before either): event ids, the server-sent-events reader, and a
// click's POST retried with the same id until the server acknowledges it, so it is stored exactly once.
"use strict";

window.taskfit = (function () {
  function eventId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // Calls onEvent(name, data) for every whole event in buffer; returns what is left of an event still arriving.
  function parseEvents(buffer, onEvent) {
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(name, JSON.parse(data));
    }
    return buffer;
  }

  // POST body (given a fresh event id) to url, retried with that id on network errors and 5xx; the server's JSON
  // answer, or null once note says why it was not saved.
  async function postOnce(url, body, note) {
    body.event = eventId();
    for (let attempt = 0; attempt < 4; attempt++) {
      try {
        const response = await fetch(url, {
          method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
        });
        if (response.ok) return await response.json();
        if (response.status < 500) {
          const problem = await response.json().catch(() => ({}));
          note.textContent = "Not saved: " + ((problem.error && problem.error.message) || response.status);
          return null;
        }
      } catch (err) { /* network: retry */ }
      await new Promise((resolve) => setTimeout(resolve, 300 * 2 ** attempt));
    }
    note.textContent = "Not saved: the server did not answer; try again.";
    return null;
  }

  return {eventId, parseEvents, postOnce};
})();
