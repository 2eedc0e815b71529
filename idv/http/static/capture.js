// idv reference capture page: no framework, no build step, nothing loaded from elsewhere.
//
// The session's capture token, challenge and frame count arrive in the URL fragment (never
// sent to any server) and are wiped from the address bar at once. Automation contract:
// a #start button, and <body data-state> = ready | capturing | uploading | done | error.
// Frames live only in memory, are sent once to /v1/capture and then dropped.
"use strict";

(() => {
  const FRAME_INTERVAL_MS = 300;        // steady capture rate; each frame carries its capture time
  const FRAMING_OK_MS = 1000;           // framing must look right this long before the prompts start...
  const FRAMING_MAX_MS = 3000;          // ...but hints are advice: the server judges, so never block longer
  const CHECK_EVERY_MS = 200;
  const MAX_WIDTH = 640;

  const ACTIONS = {
    TURN_LEFT: { zh: "请向左转头", en: "Turn your head to your left", icon: "⬅️" },
    TURN_RIGHT: { zh: "请向右转头", en: "Turn your head to your right", icon: "➡️" },
    NOD: { zh: "请点头", en: "Nod your head", icon: "⬇️" },
    BLINK: { zh: "请眨眨眼", en: "Blink your eyes", icon: "😉" },
    OPEN_MOUTH: { zh: "请张嘴", en: "Open your mouth", icon: "😮" },
  };
  const HINTS = {
    dark: ["光线太暗，请到更亮的地方", "Too dark: find more light"],
    bright: ["光线太强，请避开强光", "Too bright: avoid direct light"],
    centre: ["请将面部置于椭圆框中央", "Centre your face in the oval"],
    far: ["请靠近一点", "Too far: move closer"],
    ok: ["很好，请保持", "Good, hold still"],
  };
  // docs/integration.md, "Answers and what to tell the person": never a score, never a liveness detail.
  const OUTCOMES = {
    VERIFIED: ["核验通过", "Verified"],
    NOT_VERIFIED: ["未能核验您的身份，请核对证件号码和姓名", "We could not verify you. Check the ID number and name."],
    LIVENESS_FAILED: ["请看着摄像头，再试一次", "Please look at the camera and try again."],
    NO_FACE: ["未检测到人脸，请将面部置于框内", "No face found: keep your face in the oval."],
    MULTIPLE_FACES: ["画面中请只有您一人", "Only you in view, please."],
    LOW_QUALITY: ["请到光线更好的地方并保持不动", "More light, and hold still, please."],
    CHALLENGE_FAILED: ["请按提示完成动作", "Please follow the prompts."],
    CHALLENGE_INVALID: ["本次核验已失效，请重新发起", "This check has expired; please start a new one."],
    CHALLENGE_REQUIRED: ["本次核验已失效，请重新发起", "This check has expired; please start a new one."],
    IMPERSONATION_SUSPECTED: ["请联系工作人员", "Please see a member of staff."],
  };
  const ERRORS = {
    CAPTURE_TOKEN_INVALID: ["链接已失效或已使用，请重新发起核验", "This link has expired or was already used."],
    IDENTITY_LOCKED: ["尝试次数过多，请稍后再试", "Too many attempts. Try again later."],
    ALTERNATIVE_METHOD_REQUIRED: ["请到柜台办理核验", "Please verify at a counter."],
    RATE_LIMITED: ["请稍候再试", "Please wait and try again."],
    OVERLOADED: ["请稍候再试", "Please wait and try again."],
    NOT_SERVING: ["请稍候再试", "Please wait and try again."],
    CAMERA: ["无法使用摄像头，请允许访问摄像头后重试", "The camera is not available: allow camera access and try again."],
    LINK: ["链接无效，请重新发起核验", "This link is not valid; please start a new check."],
    NETWORK: ["网络错误，请重新发起核验", "Network problem; please start a new check."],
    OTHER: ["出错了，请重新发起核验", "Something went wrong; please start a new check."],
  };

  const $ = (id) => document.getElementById(id);
  const body = document.body;
  const video = $("preview");
  const startButton = $("start");
  const session = readFragment();
  let stream = null;

  function readFragment() {
    const params = new URLSearchParams(location.hash.slice(1));
    // The token must not linger in the address bar, history or a screenshot of it.
    history.replaceState(null, "", location.pathname + location.search);
    const actions = (params.get("actions") || "").split(",").filter((a) => a in ACTIONS);
    return {
      token: params.get("token") || "",
      actions,
      // Issue 14: a light challenge's colour sequence (light.js), flashed while capturing.
      light: window.idvLight ? window.idvLight.parse(params.get("light") || "") : [],
      frames: Math.max(1, Math.min(parseInt(params.get("frames") || "24", 10) || 24, 64)),
      expires: parseInt(params.get("expires") || "0", 10) || 0,
      // Issue 14, record mode (operators calibrating the light check; the node saves the capture).
      record: params.get("record") === "1",
    };
  }

  function setState(state) { body.dataset.state = state; }

  function say(element, pair) {
    element.replaceChildren(document.createTextNode(pair[0]));
    const english = document.createElement("span");
    english.lang = "en";
    english.textContent = pair[1];
    element.append(english);
  }

  function finish(state, pair, cssClass) {
    stopCamera();
    setState(state);
    $("hint").textContent = "";
    $("step").textContent = "";
    $("prompt").textContent = "";
    $("icon").textContent = "";
    $("icon").classList.remove("pulse");
    const outcome = $("outcome");
    outcome.className = "outcome " + (cssClass || "");
    say(outcome, pair);
    outcome.tabIndex = -1;
    outcome.focus();
  }

  function stopCamera() {
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stream = null;
    video.srcObject = null;
  }

  // ------------------------------------------------------------------ framing hints
  // A cheap in-browser look at the oval: brightness, and where skin-coloured pixels sit
  // (YCbCr skin box). Good enough to say "too dark", "too far", "centre your face"; the
  // server's detector makes every real decision.
  const probe = document.createElement("canvas");
  probe.width = 96; probe.height = 128;
  const probeContext = probe.getContext("2d", { willReadFrequently: true });

  function framing() {
    if (!video.videoWidth) return "centre";
    const vw = video.videoWidth, vh = video.videoHeight;
    const target = 3 / 4;  // the stage's aspect ratio (width / height), centre-cropped like object-fit: cover
    let sw = vw, sh = vh;
    if (vw / vh > target) sw = vh * target; else sh = vw / target;
    probeContext.drawImage(video, (vw - sw) / 2, (vh - sh) / 2, sw, sh, 0, 0, probe.width, probe.height);
    const { data } = probeContext.getImageData(0, 0, probe.width, probe.height);
    let inside = 0, luma = 0, skin = 0, sx = 0, sy = 0;
    for (let y = 0; y < probe.height; y++) {
      for (let x = 0; x < probe.width; x++) {
        const nx = (x / probe.width - 0.5) / 0.27, ny = (y / probe.height - 0.46) / 0.36;
        if (nx * nx + ny * ny > 1) continue;
        const i = (y * probe.width + x) * 4, r = data[i], g = data[i + 1], b = data[i + 2];
        const yy = 0.299 * r + 0.587 * g + 0.114 * b;
        const cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b;
        const cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b;
        inside++; luma += yy;
        if (yy > 40 && cb >= 77 && cb <= 127 && cr >= 133 && cr <= 173) { skin++; sx += x; sy += y; }
      }
    }
    data.fill(0);
    probeContext.clearRect(0, 0, probe.width, probe.height);
    luma /= inside;
    if (luma < 50) return "dark";
    if (luma > 225) return "bright";
    const fraction = skin / inside;
    if (fraction < 0.08) return "centre";
    const cx = sx / skin / probe.width - 0.5, cy = sy / skin / probe.height - 0.46;
    if (Math.abs(cx) > 0.12 || Math.abs(cy) > 0.15) return "centre";
    if (fraction < 0.3) return "far";
    return "ok";
  }

  function waitForFraming() {
    return new Promise((resolve) => {
      const began = performance.now();
      let okSince = null;
      const timer = setInterval(() => {
        const verdict = framing();
        body.dataset.framing = verdict === "ok" ? "ok" : "bad";
        say($("hint"), HINTS[verdict]);
        const now = performance.now();
        okSince = verdict === "ok" ? (okSince ?? now) : null;
        if ((okSince !== null && now - okSince >= FRAMING_OK_MS) || now - began >= FRAMING_MAX_MS) {
          clearInterval(timer);
          resolve();
        }
      }, CHECK_EVERY_MS);
    });
  }

  // ------------------------------------------------------------------ capture
  function grab(canvas, context) {
    return new Promise((resolve) => {
      context.drawImage(video, 0, 0, canvas.width, canvas.height);
      canvas.toBlob((blob) => resolve(blob), "image/jpeg", 0.9);
    });
  }

  async function capture() {
    const scale = Math.min(1, MAX_WIDTH / video.videoWidth);
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(video.videoWidth * scale);
    canvas.height = Math.round(video.videoHeight * scale);
    const context = canvas.getContext("2d");
    const total = session.frames;
    // The server checks each action against this schedule (liveness/actions.py prompt_starts): prompt k
    // of K is shown from frame ceil(k * total / K), so the frames are split evenly, in order. Keep them in step.
    const perAction = total / Math.max(1, session.actions.length);
    const frames = [], stamps = [];
    // With a light challenge the frames are spread over the flashes and timed from the first one.
    const light = session.light.length ? window.idvLight : null;
    const interval = light ? light.interval(session.light, total) : FRAME_INTERVAL_MS;
    const flashes = light ? light.start(session.light) : null;
    if (!session.actions.length) say($("prompt"), ["请保持不动，注视屏幕", "Hold still and look at the screen"]);
    const origin = flashes ? flashes.origin : 0;
    const began = flashes ? origin - light.BASELINE_MS : performance.now();
    try {
      for (let i = 0; i < total; i++) {
        const due = began + i * interval;  // a steady schedule: no drift from slow encodes
        const wait = due - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        if (session.actions.length) {
          const step = Math.min(session.actions.length - 1, Math.floor(i / perAction));
          if (body.dataset.step !== String(step)) showAction(step);
        }
        stamps.push(Math.round((performance.now() - origin) * 1000) / 1000);
        frames.push(await grab(canvas, context));
        $("progress").value = Math.round(((i + 1) / total) * 100);
      }
    } finally {
      if (flashes) flashes.stop();
    }
    context.clearRect(0, 0, canvas.width, canvas.height);
    canvas.width = canvas.height = 0;
    return { frames, stamps };
  }

  function showAction(step) {
    const action = session.actions[step];
    body.dataset.step = String(step);
    body.dataset.action = action;
    const number = step + 1, count = session.actions.length;
    $("step").textContent = `动作 ${number}/${count} · Step ${number} of ${count}`;
    const text = ACTIONS[action];
    say($("prompt"), [text.zh, text.en]);
    $("icon").textContent = text.icon;
    $("icon").classList.add("pulse");
  }

  async function upload(frames, stamps) {
    const fields = { timestamps_ms: stamps, sizes: frames.map((f) => f.size) };
    if (session.record) fields.record_label = $("record-label").value;
    const header = JSON.stringify(fields) + "\n";
    const payload = new Blob([header, ...frames], { type: "application/vnd.idv.capture" });
    const response = await fetch("/v1/capture", {
      method: "POST",
      headers: { "Authorization": "Bearer " + session.token, "Content-Type": "application/vnd.idv.capture" },
      body: payload,
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
    let answer = null;
    try { answer = await response.json(); } catch (e) { answer = null; }
    return { ok: response.ok, answer };
  }

  async function run() {
    startButton.hidden = true;
    $("intro").hidden = true;
    setState("capturing");
    body.dataset.phase = "framing";
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        video: { facingMode: "user", width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
    } catch (e) {
      finish("error", ERRORS.CAMERA);
      return;
    }
    video.srcObject = stream;
    await video.play();
    await waitForFraming();
    $("hint").textContent = "";
    body.dataset.phase = "challenge";
    const { frames, stamps } = await capture();
    stopCamera();
    setState("uploading");
    $("step").textContent = "";
    $("prompt").textContent = "";
    $("icon").textContent = "";
    say($("hint"), ["正在核验，请稍候", "Checking, please wait"]);
    let result;
    try {
      result = await upload(frames, stamps);
    } catch (e) {
      finish("error", ERRORS.NETWORK);
      return;
    } finally {
      frames.length = 0;
    }
    if (result.ok && result.answer && result.answer.verdict) {
      const pass = result.answer.verdict === "PASS";
      finish("done", OUTCOMES[result.answer.reason] || ERRORS.OTHER, pass ? "pass" : "fail");
      body.dataset.verdict = result.answer.verdict;
      body.dataset.reason = result.answer.reason;
      // Issue 18: checkin.js shows what a PASS brings (check-in QR code, history); nothing else here.
      document.dispatchEvent(new CustomEvent("idv:answer", { detail: result.answer }));
      return;
    }
    const reason = result.answer && result.answer.error ? result.answer.error.reason : "";
    body.dataset.reason = reason;
    finish("error", ERRORS[reason] || ERRORS.OTHER);
  }

  function init() {
    if (!session.token || (session.actions.length === 0 && session.light.length === 0)) {
      finish("error", ERRORS.LINK);
      startButton.hidden = true;
      return;
    }
    if (session.expires && Date.now() / 1000 > session.expires) {
      finish("error", ERRORS.CAPTURE_TOKEN_INVALID);
      startButton.hidden = true;
      return;
    }
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      finish("error", ERRORS.CAMERA);  // e.g. a plain-http page on another host: cameras need a secure context
      startButton.hidden = true;
      return;
    }
    if (session.record) {
      // The operator says what is in front of the camera before starting; the node saves the capture.
      $("record").hidden = false;
      body.dataset.record = "1";
    }
    setState("ready");
    startButton.addEventListener("click", run, { once: true });
    startButton.focus();
  }

  // A kiosk that is handed the next session's URL on the same page: start afresh.
  window.addEventListener("hashchange", () => location.reload());
  init();
})();
