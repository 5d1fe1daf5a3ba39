"""``GET /``: one page to try the model. Inline CSS and JavaScript only; the response's
Content-Security-Policy lets the page reach nothing but this server."""

CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
                           "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'")

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>texttune serve</title>
<style>
  :root { --fg: #1d2330; --muted: #667085; --line: #d8dde6; --accent: #2f6fec; --bad: #b42318; }
  * { box-sizing: border-box; }
  body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
         max-width: 46rem; margin: 2rem auto; padding: 0 1rem; }
  h1 { font-size: 1.3rem; margin: 0 0 .2rem; }
  .muted { color: var(--muted); font-size: .9rem; }
  textarea, input[type=text] { width: 100%; font: inherit; padding: .5rem; border: 1px solid var(--line);
         border-radius: 6px; }
  textarea { min-height: 6rem; resize: vertical; }
  label { display: block; margin: .8rem 0 .3rem; font-weight: 600; }
  .options { display: flex; gap: 1.2rem; margin: .6rem 0; flex-wrap: wrap; }
  .options label { display: inline; font-weight: normal; margin: 0; }
  button { font: inherit; padding: .45rem 1.2rem; border: 0; border-radius: 6px; background: var(--accent);
           color: white; cursor: pointer; }
  button:disabled { opacity: .6; cursor: wait; }
  .error { color: var(--bad); margin-top: 1rem; white-space: pre-wrap; }
  .result { margin-top: 1.2rem; border-top: 1px solid var(--line); padding-top: .8rem; }
  .result .text { color: var(--muted); font-size: .9rem; margin-bottom: .4rem; overflow-wrap: anywhere; }
  .row { display: grid; grid-template-columns: 10rem 1fr 5.5rem; gap: .6rem; align-items: center;
         margin: .15rem 0; }
  .row .label { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .row:first-of-type .label { font-weight: 700; }
  .bar { height: .7rem; background: #e9edf5; border-radius: 4px; overflow: hidden; }
  .bar span { display: block; height: 100%; background: var(--accent); }
  .score { text-align: right; font-variant-numeric: tabular-nums; }
</style>
</head>
<body>
<h1 id="title">texttune serve</h1>
<div class="muted" id="model">loading model information…</div>

<label for="text">Text</label>
<textarea id="text" placeholder="Type a text to classify"></textarea>
<label for="pair">Second text of a pair <span class="muted">(optional)</span></label>
<input type="text" id="pair" placeholder="only for models trained on pairs">
<div class="options">
  <label><input type="checkbox" id="lines"> one text per line (a batch)</label>
  <label><input type="checkbox" id="truncate"> truncate long texts</label>
  <label><input type="checkbox" id="raw"> raw scores (logits)</label>
</div>
<button id="classify" type="button">Classify</button>
<span class="muted">&nbsp;or Ctrl+Enter</span>
<div id="error" class="error" role="alert"></div>
<div id="results" aria-live="polite"></div>

<script>
"use strict";
const $ = (id) => document.getElementById(id);

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;  // textContent: labels and texts are never HTML
  return node;
}

async function loadInfo() {
  try {
    const info = await (await fetch("info")).json();
    $("title").textContent = info.model_name;
    const temperature = info.temperature ? `, temperature ${info.temperature.toFixed(3)}` : "";
    const limit = info.max_length ? `max ${info.max_length} tokens` : "raw texts";
    $("model").textContent = `${info.labels.length} labels: ${info.labels.join(", ")} · ${limit} · ` +
      `${info.backend} backend${temperature}`;
  } catch (e) {
    $("model").textContent = "could not read /info";
  }
}

function inputsFromForm() {
  const text = $("text").value, pair = $("pair").value;
  if ($("lines").checked) {
    const lines = text.split("\\n").filter((line) => line.trim() !== "");
    return {inputs: lines.map((line) => pair.trim() ? [line, pair] : [line]), shown: lines};
  }
  return {inputs: pair.trim() ? [[text, pair]] : [text], shown: [text]};
}

function render(rows, shown, raw) {
  const box = $("results");
  box.replaceChildren();
  rows.forEach((predictions, i) => {
    const block = element("div", "result");
    block.appendChild(element("div", "text", shown[i]));
    const top = Math.max(...predictions.map((p) => Math.abs(p.score))) || 1;
    for (const p of predictions) {
      const row = element("div", "row");
      row.appendChild(element("span", "label", p.label));
      const bar = element("div", "bar"), fill = element("span");
      fill.style.width = `${Math.round(100 * (raw ? Math.abs(p.score) / top : p.score))}%`;
      bar.appendChild(fill);
      row.appendChild(bar);
      row.appendChild(element("span", "score", p.score.toFixed(4)));
      block.appendChild(row);
    }
    box.appendChild(block);
  });
}

async function classify() {
  const {inputs, shown} = inputsFromForm();
  const raw = $("raw").checked;
  $("error").textContent = "";
  $("classify").disabled = true;
  try {
    const response = await fetch("predict", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({inputs, truncate: $("truncate").checked, raw_scores: raw}),
    });
    const body = await response.json();
    if (!response.ok) {
      $("results").replaceChildren();
      $("error").textContent = `${response.status}: ${body.error}`;
      return;
    }
    render(body, shown, raw);  // the request is always a batch: one list of labels per text
  } catch (e) {
    $("error").textContent = `request failed: ${e}`;
  } finally {
    $("classify").disabled = false;
  }
}

$("classify").addEventListener("click", classify);
$("text").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) classify();
});
loadInfo();
</script>
</body>
</html>
"""
