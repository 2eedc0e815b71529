// Issue 18: what a PASS is used for, kept apart from capture.js (which only announces the answer
// with an "idv:answer" event). Nothing is loaded from elsewhere: the QR code is a PNG the node
// rendered, and the history is read from this node with the token the upload answered with.
// Automation contract: <body data-credential> = shown | expired, <body data-history> = shown | error.
"use strict";

(() => {
  const PURPOSES = {
    CHECK_IN: ["入住登记", "Check-in"],
    REGISTRATION: ["注册", "Registration"],
    LICENCE_RENEWAL: ["证照换领", "Licence renewal"],
  };
  const VERDICTS = { PASS: ["通过", "passed"], FAIL: ["未通过", "failed"], REFUSED: ["被拒绝", "refused"] };
  const $ = (id) => document.getElementById(id);
  const body = document.body;

  document.addEventListener("idv:answer", (event) => {
    const answer = event.detail || {};
    if (answer.verdict !== "PASS") return;
    const credential = answer.credential;
    if (credential && typeof credential.qr_png === "string" && credential.qr_png.startsWith("data:image/png;base64,")) {
      showCode(credential);
    }
    if (typeof answer.history_token === "string" && answer.history_token) offerHistory(answer.history_token);
  });

  function showCode(credential) {
    $("checkin-qr").src = credential.qr_png;
    $("checkin").hidden = false;
    body.dataset.credential = "shown";
    const tick = () => {
      const left = Math.round(credential.expires_at - Date.now() / 1000);
      if (left <= 0) {
        body.dataset.credential = "expired";
        $("checkin-qr").removeAttribute("src");  // worthless now: do not leave it to be photographed
        $("checkin-expiry").textContent = "核验码已过期，请重新核验 · The code has expired; verify again.";
        clearInterval(timer);
        return;
      }
      $("checkin-expiry").textContent = `${left} 秒内有效，仅可使用一次 · Valid for ${left} s, once`;
    };
    const timer = setInterval(tick, 1000);
    tick();
    $("checkin").scrollIntoView({ block: "center" });
  }

  function offerHistory(token) {
    $("history").hidden = false;
    $("history-button").addEventListener("click", () => showHistory(token), { once: true });
  }

  async function showHistory(token) {
    $("history-button").hidden = true;
    let answer = null;
    try {
      const response = await fetch("/v1/history", {
        headers: { "Authorization": "Bearer " + token }, cache: "no-store", credentials: "omit",
        referrerPolicy: "no-referrer",
      });
      answer = response.ok ? await response.json() : null;
    } catch (e) {
      answer = null;
    }
    const summary = $("history-summary");
    if (!answer || !Array.isArray(answer.entries)) {
      body.dataset.history = "error";
      summary.textContent = "暂时无法查询核验记录 · The history is not available now.";
      return;
    }
    summary.replaceChildren(document.createTextNode(
      `近 ${answer.window_days} 天内以您的身份进行的核验：${answer.entries.length} 次`));
    const english = document.createElement("span");
    english.lang = "en";
    english.textContent = `Verifications against your ID in the last ${answer.window_days} days: ${answer.entries.length}`;
    summary.append(english);
    const list = $("history-list");
    list.replaceChildren(...answer.entries.map((entry) => {
      const item = document.createElement("li");
      const purpose = PURPOSES[entry.purpose] || [entry.purpose, entry.purpose];
      const verdict = VERDICTS[entry.verdict] || [entry.verdict, entry.verdict];
      item.dataset.verdict = entry.verdict;
      item.dataset.caller = entry.caller;
      item.dataset.purpose = entry.purpose;
      // textContent only: a caller's display name is data, never markup.
      item.textContent = `${new Date(entry.time * 1000).toLocaleString("zh-CN")} · ${entry.caller} · ` +
        `${purpose[0]} ${purpose[1]} · ${verdict[0]} ${verdict[1]}`;
      return item;
    }));
    body.dataset.history = "shown";
    $("history").scrollIntoView({ block: "start" });
  }
})();
