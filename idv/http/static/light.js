// idv light challenge (issue 14): flash the session's secret colour sequence full-screen while the
// capture page captures, and time each frame from the first flash's start. Loaded before
// capture.js, which calls window.idvLight when the session's URL fragment carries `light`.
//
// The screen is the light source: the face in front of it reflects each colour; a video made
// beforehand or injected as a camera cannot follow a sequence it did not know. The page only
// shows and times the flashes: the server judges.
"use strict";

(() => {
  const BASELINE_MS = 400;   // unlit frames before the first flash: the face's own colour
  const TAIL_MS = 200;       // and a little after the last one
  const MIN_INTERVAL_MS = 60;
  const COLOURS = {
    RED: "rgb(255,0,0)", GREEN: "rgb(0,255,0)", BLUE: "rgb(0,0,255)",
    YELLOW: "rgb(255,255,0)", MAGENTA: "rgb(255,0,255)", CYAN: "rgb(0,255,255)",
  };

  // "RED:300,BLUE:280" -> [{colour, duration}]; anything malformed -> [] (the page then shows LINK).
  function parse(text) {
    if (!text) return [];
    const steps = text.split(",").map((item) => {
      const [colour, duration] = item.split(":");
      return { colour, duration: parseInt(duration, 10) };
    });
    const valid = steps.every((s) => s.colour in COLOURS && s.duration >= 50 && s.duration <= 5000);
    return valid && steps.length <= 20 ? steps : [];
  }

  function totalMs(steps) { return steps.reduce((sum, s) => sum + s.duration, 0); }

  // The capture interval that fits `frames` frames over baseline + sequence + tail.
  function interval(steps, frames) {
    return Math.max(MIN_INTERVAL_MS, (BASELINE_MS + totalMs(steps) + TAIL_MS) / Math.max(1, frames));
  }

  // Start the sequence BASELINE_MS from now on a full-screen overlay; returns its origin (the
  // performance.now() time of the first flash, what frame times are relative to) and stop().
  function start(steps) {
    const overlay = document.createElement("div");
    overlay.id = "light-overlay";
    overlay.setAttribute("aria-hidden", "true");
    Object.assign(overlay.style, { position: "fixed", inset: "0", zIndex: "1000", background: "rgb(0,0,0)",
                                   opacity: "0", pointerEvents: "none" });
    document.body.append(overlay);
    document.body.dataset.light = "on";
    const origin = performance.now() + BASELINE_MS;
    const ends = [];
    steps.reduce((t, s) => { ends.push(t + s.duration); return t + s.duration; }, 0);
    let frame = 0;
    const paint = () => {
      const t = performance.now() - origin;
      const index = ends.findIndex((end) => t < end);
      if (t >= 0 && index >= 0) {
        overlay.style.background = COLOURS[steps[index].colour];
        overlay.style.opacity = "1";
        document.body.dataset.lightStep = String(index);
      } else {
        overlay.style.opacity = "0";  // before and after: the page as it is (the unlit baseline)
      }
      frame = requestAnimationFrame(paint);
    };
    frame = requestAnimationFrame(paint);
    return {
      origin,
      stop() {
        cancelAnimationFrame(frame);
        overlay.remove();
        delete document.body.dataset.light;
      },
    };
  }

  window.idvLight = { parse, interval, start, totalMs, BASELINE_MS, TAIL_MS };
})();
