// The page of `clsvc serve`: pick or record a source clip, pick a target voice, POST both to
// /v1/convert and play the result. Plain browser JavaScript, no libraries: the page must work
// offline and without a build step.
"use strict";

const $ = (id) => document.getElementById(id);
const el = {
  model: $("model"), form: $("form"), sourceFile: $("source-file"), record: $("record"),
  recordStatus: $("record-status"), sourceAudio: $("source-audio"), mode: $("mode"),
  modeReference: $("mode-reference"), speakerRow: $("speaker-row"), speaker: $("speaker"),
  referenceRow: $("reference-row"), referenceFiles: $("reference-files"), convert: $("convert"),
  status: $("status"), error: $("error"), result: $("result"), resultAudio: $("result-audio"),
  download: $("download"),
};

// The server's limits, from /v1/speakers; checked here only to fail fast, the server checks again.
const limits = { sampleRate: 16000, maxSeconds: Infinity, maxUploadBytes: Infinity };
let source = null; // the clip to convert: a File from the input, or the recording encoded as WAV
let ready = false; // /v1/speakers answered
let busy = false; // a conversion is in flight
const urls = { source: null, result: null }; // object URLs to revoke when replaced (they pin memory)

function showError(text) {
  el.error.textContent = text;
  el.error.hidden = !text;
}

function setStatus(text, spinning = false) {
  el.status.textContent = text;
  el.status.classList.toggle("spinning", spinning);
}

function setUrl(kind, blob) {
  if (urls[kind]) URL.revokeObjectURL(urls[kind]);
  urls[kind] = blob ? URL.createObjectURL(blob) : null;
  return urls[kind];
}

function referenceMode() {
  return !el.mode.hidden && el.modeReference.checked;
}

function updateControls() {
  const ref = referenceMode();
  el.speakerRow.hidden = ref;
  el.referenceRow.hidden = !ref;
  const target = ref ? el.referenceFiles.files.length > 0 : el.speaker.value !== "";
  el.convert.disabled = busy || !ready || !source || !target;
}

function setSource(blob) {
  source = blob;
  const url = setUrl("source", blob);
  if (url) el.sourceAudio.src = url;
  else el.sourceAudio.removeAttribute("src"); // src = "" would load the page itself as audio
  showError("");
  updateControls();
}

function megabytes(n) {
  return (n / 1e6).toFixed(1) + " MB";
}

// ---- voices -------------------------------------------------------------------------------------

async function loadSpeakers() {
  try {
    const r = await fetch("/v1/speakers");
    if (!r.ok) throw new Error(await errorText(r));
    const info = await r.json();
    el.model.textContent = `Model: ${info.model}`;
    limits.sampleRate = info.sample_rate || limits.sampleRate;
    limits.maxSeconds = info.max_seconds || Infinity;
    limits.maxUploadBytes = info.max_upload_bytes || Infinity;
    el.speaker.replaceChildren(...info.speakers.map((name) => new Option(name, name)));
    el.speaker.disabled = info.speakers.length === 0;
    el.mode.hidden = !info.one_shot; // reference clips only where the model can use them
    if (info.speakers.length === 0 && info.one_shot) el.modeReference.checked = true;
    if (Number.isFinite(limits.maxSeconds)) {
      const min = info.min_seconds ? `${info.min_seconds} to ` : "at most ";
      $("source-hint").textContent += ` Clips of ${min}${limits.maxSeconds} s.`;
    }
    ready = true;
  } catch (e) {
    el.model.textContent = "The voices could not be loaded.";
    showError(`Could not load the voices: ${e.message}`);
  }
  updateControls();
}

// ---- recording ----------------------------------------------------------------------------------

let recorder = null;
let recordTimer = null;

async function startRecording() {
  // getUserMedia exists only in secure contexts (https, or http://localhost).
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    showError("Recording needs a browser with microphone access over https or on localhost; upload a clip instead.");
    return;
  }
  let stream;
  el.record.disabled = true; // no second start while the permission prompt is open
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) {
    showError(`The microphone could not be opened (${e.name}); allow it, or upload a clip instead.`);
    return;
  } finally {
    el.record.disabled = false;
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (ev) => { if (ev.data.size) chunks.push(ev.data); };
  recorder.onstop = async () => {
    stream.getTracks().forEach((t) => t.stop());
    clearInterval(recordTimer);
    el.record.textContent = "Record";
    el.record.setAttribute("aria-pressed", "false");
    el.recordStatus.textContent = "Encoding…";
    try {
      // The browser records webm/opus (or ogg, or mp4): not readable by the server, so decode it
      // here and send 16-bit PCM WAV at the model's rate.
      const wav = await toWav(new Blob(chunks, { type: recorder.mimeType }), limits.sampleRate);
      el.sourceFile.value = ""; // the recording replaces any chosen file
      setSource(new File([wav], "recording.wav", { type: "audio/wav" }));
      el.recordStatus.textContent = `Recorded ${((wav.size - 44) / 2 / limits.sampleRate).toFixed(1)} s.`;
    } catch (e) {
      el.recordStatus.textContent = "";
      showError(`The recording could not be decoded: ${e.message}`);
    }
    recorder = null;
  };
  recorder.start();
  const t0 = performance.now();
  el.record.textContent = "Stop recording";
  el.record.setAttribute("aria-pressed", "true");
  recordTimer = setInterval(() => {
    const s = (performance.now() - t0) / 1000;
    el.recordStatus.textContent = `Recording… ${s.toFixed(0)} s`;
    // Longer clips would be refused (413); stop at the limit.
    if (s >= limits.maxSeconds && recorder.state === "recording") recorder.stop();
  }, 250);
}

// Any audio the browser can decode -> mono 16-bit PCM WAV at `rate` Hz.
async function toWav(blob, rate) {
  const ctx = new AudioContext();
  let decoded;
  try {
    decoded = await ctx.decodeAudioData(await blob.arrayBuffer());
  } finally {
    ctx.close();
  }
  // An offline context with one channel at `rate` both downmixes and resamples.
  const frames = Math.max(1, Math.ceil(decoded.duration * rate));
  const off = new OfflineAudioContext(1, frames, rate);
  const node = off.createBufferSource();
  node.buffer = decoded;
  node.connect(off.destination);
  node.start();
  const samples = (await off.startRendering()).getChannelData(0);
  return encodeWav(samples, rate);
}

// float samples in [-1, 1] -> a WAV file (RIFF header + little-endian int16 PCM, one channel).
function encodeWav(samples, rate) {
  const buf = new ArrayBuffer(44 + 2 * samples.length);
  const v = new DataView(buf);
  const ascii = (at, s) => { for (let i = 0; i < s.length; i++) v.setUint8(at + i, s.charCodeAt(i)); };
  ascii(0, "RIFF"); v.setUint32(4, 36 + 2 * samples.length, true); ascii(8, "WAVE");
  ascii(12, "fmt "); v.setUint32(16, 16, true); v.setUint16(20, 1, true); // PCM
  v.setUint16(22, 1, true); v.setUint32(24, rate, true); v.setUint32(28, 2 * rate, true); // mono, bytes/s
  v.setUint16(32, 2, true); v.setUint16(34, 16, true); // block align, bits per sample
  ascii(36, "data"); v.setUint32(40, 2 * samples.length, true);
  for (let i = 0; i < samples.length; i++) {
    const x = Math.max(-1, Math.min(1, samples[i]));
    v.setInt16(44 + 2 * i, x < 0 ? x * 0x8000 : x * 0x7fff, true);
  }
  return new Blob([buf], { type: "audio/wav" });
}

// ---- conversion ---------------------------------------------------------------------------------

// The words to show for a failed response: the server's one-line `error`, else the HTTP status.
async function errorText(r) {
  let text = "";
  try {
    text = (await r.clone().json()).error || "";
  } catch (_) { /* not JSON: a proxy's page, say */ }
  if (r.status === 503) {
    const wait = r.headers.get("Retry-After");
    return `The server is busy converting other clips; try again${wait ? ` in ${wait} s` : " shortly"}.`;
  }
  if (r.status === 504) return text || "The conversion took too long and was stopped; try a shorter clip.";
  return text || `The server answered ${r.status} ${r.statusText}.`;
}

async function convert(ev) {
  ev.preventDefault();
  if (busy || !source) return;
  const files = referenceMode() ? [...el.referenceFiles.files] : [];
  const size = source.size + files.reduce((n, f) => n + f.size, 0);
  if (size > limits.maxUploadBytes) {
    showError(`The upload is ${megabytes(size)}; the server takes at most ${megabytes(limits.maxUploadBytes)}.`);
    return;
  }
  const form = new FormData();
  form.append("source", source, source.name || "source.wav");
  if (files.length) files.forEach((f) => form.append("reference", f, f.name));
  else form.append("speaker", el.speaker.value);

  busy = true;
  updateControls();
  showError("");
  el.result.hidden = true; // an earlier result must not pass for this one
  const t0 = performance.now();
  const tick = () => setStatus(`Converting… ${((performance.now() - t0) / 1000).toFixed(0)} s`, true);
  tick();
  const timer = setInterval(tick, 500);
  try {
    const r = await fetch("/v1/convert", { method: "POST", body: form });
    if (!r.ok) throw new Error(await errorText(r));
    const wav = await r.blob();
    const url = setUrl("result", wav);
    el.resultAudio.src = url;
    el.download.href = url;
    const name = /filename="?([^";]+)"?/.exec(r.headers.get("Content-Disposition") || "");
    el.download.download = name ? name[1] : "converted.wav";
    el.result.hidden = false;
    // X-Clsvc-Seconds: the server's own time on the job; the rest was upload, queue and download.
    const took = ((performance.now() - t0) / 1000).toFixed(1);
    const job = Number(r.headers.get("X-Clsvc-Seconds"));
    setStatus(`Converted in ${took} s` + (job ? ` (${job.toFixed(1)} s of it converting on the server).` : "."));
  } catch (e) {
    setStatus("");
    // fetch itself throws TypeError when the server cannot be reached.
    showError(e instanceof TypeError ? "The server could not be reached; is `clsvc serve` running?" : e.message);
  } finally {
    clearInterval(timer);
    busy = false;
    updateControls();
  }
}

// ---- wiring -------------------------------------------------------------------------------------

el.sourceFile.addEventListener("change", () => {
  const f = el.sourceFile.files[0] || null;
  el.recordStatus.textContent = "";
  setSource(f);
});
el.record.addEventListener("click", () => {
  if (!recorder) startRecording();
  else if (recorder.state === "recording") recorder.stop();
});
el.speaker.addEventListener("change", updateControls);
el.referenceFiles.addEventListener("change", updateControls);
document.querySelectorAll('input[name="mode"]').forEach((r) => r.addEventListener("change", updateControls));
el.form.addEventListener("submit", convert);
loadSpeakers();
