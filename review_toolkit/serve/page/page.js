// The scoring page: reviews from the text box (one per line) or a CSV file's `text` column,
// parsed here in the browser, sent to /score in requests of at most the server's max_inputs.
"use strict";

const state = { maxInputs: 64, csvReviews: null };
const $ = (id) => document.getElementById(id);

// RFC 4180 CSV: quoted fields may hold commas, doubled quotes and newlines.
function parseCsv(text) {
  const rows = [];
  let row = [], field = "", quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; }
      else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") { row.push(field); field = ""; }
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push(field); rows.push(row); row = []; field = "";
    } else field += c;
  }
  if (field !== "" || row.length) { row.push(field); rows.push(row); }
  return rows;
}

function reviewsFromCsv(text) {
  const rows = parseCsv(text.replace(/^\uFEFF/, ""));
  if (!rows.length) throw new Error("the CSV file is empty");
  const column = rows[0].map((name) => name.trim()).indexOf("text");
  if (column < 0) throw new Error(`the CSV file has no "text" column (columns: ${rows[0].join(", ")})`);
  return rows.slice(1).map((row) => row[column] || "").filter((review) => review.trim());
}

function setStatus(message, isError = false) {
  $("status").textContent = message;
  $("status").className = isError ? "error" : "";
}

async function loadCsv(file) {
  try {
    state.csvReviews = reviewsFromCsv(await file.text());
    const count = state.csvReviews.length;
    setStatus(`${count} review${count === 1 ? "" : "s"} read from ${file.name}; press Score.`);
  } catch (error) {
    state.csvReviews = null;
    setStatus(`Cannot use ${file.name}: ${error.message}`, true);
  }
}

async function postScore(reviews) {
  const response = await fetch("score", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ reviews }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `the server answered ${response.status}`);
  return body;
}

function addRow(number, review, verdict) {
  const row = document.createElement("tr");
  row.className = "result";
  const cells = [String(number), review, verdict.label, verdict.p_fake.toFixed(3), ""];
  cells.forEach((text, index) => {
    const cell = document.createElement("td");
    cell.textContent = text;
    if (index === 1) cell.className = "review";
    if (index === 2) cell.className = `verdict verdict-${verdict.label}`;
    if (index === 3) cell.className = "p-fake";
    row.appendChild(cell);
  });
  const bar = document.createElement("span");
  bar.className = "bar";
  bar.title = `p_fake ${verdict.p_fake.toFixed(3)}, threshold ${verdict.threshold.toFixed(3)}`;
  bar.innerHTML = '<span class="fill"></span><span class="mark"></span>';
  bar.querySelector(".fill").style.width = `${(100 * verdict.p_fake).toFixed(1)}%`;
  bar.querySelector(".mark").style.left = `${(100 * verdict.threshold).toFixed(1)}%`;
  const against = document.createElement("span");
  against.textContent = ` ${verdict.p_fake >= verdict.threshold ? "\u2265" : "<"} ${verdict.threshold.toFixed(3)}`;
  row.lastChild.append(bar, against);
  $("results").querySelector("tbody").appendChild(row);
}

async function submit(event) {
  event.preventDefault();
  const typed = $("reviews").value.split(/\r?\n/).filter((line) => line.trim());
  const reviews = typed.length ? typed : state.csvReviews || [];
  if (!reviews.length) { setStatus("Type a review or drop a CSV file first.", true); return; }
  $("submit").disabled = true;
  $("results").querySelector("tbody").replaceChildren();
  $("results").hidden = false;
  try {
    for (let start = 0; start < reviews.length; start += state.maxInputs) {
      setStatus(`Scoring ${Math.min(start + state.maxInputs, reviews.length)} of ${reviews.length}\u2026`);
      const chunk = reviews.slice(start, start + state.maxInputs);
      const body = await postScore(chunk);
      body.results.forEach((verdict, index) => addRow(start + index + 1, chunk[index], verdict));
    }
    const fakes = document.querySelectorAll("td.verdict-fake").length;
    setStatus(`Done: ${reviews.length} review${reviews.length === 1 ? "" : "s"}, ${fakes} fake.`);
  } catch (error) {
    setStatus(`Error: ${error.message}`, true);
  } finally {
    $("submit").disabled = false;
  }
}

async function describeRun() {
  try {
    const response = await fetch("info");
    if (!response.ok) throw new Error((await response.json()).error || response.status);
    const info = await response.json();
    state.maxInputs = info.server.max_inputs;
    const parts = [info.run.backbone, info.run.method, info.run.head].filter(Boolean).join(" + ");
    $("run").textContent = `Run ${info.run.name} (${parts}); threshold ${info.threshold.toFixed(3)}.`;
  } catch (error) {
    $("run").textContent = `The model is not ready yet (${error.message}); reload in a moment.`;
  }
}

$("form").addEventListener("submit", submit);
$("file").addEventListener("change", (event) => event.target.files[0] && loadCsv(event.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files[0]) loadCsv(event.dataTransfer.files[0]);
});
describeRun();
