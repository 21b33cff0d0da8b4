// samplekit playground: edit a chain (or two), stream a completion, look inside each step.
// Plain JavaScript, no build step, no external assets. Talks to the server's own API:
// GET /v1/config, /v1/processors, /v1/presets; POST /v1/completions with stream: true and
// "samplekit": {"chain": [...], "trace": N}, whose chunks carry each token's samplekit_trace.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const state = { processors: {}, presets: {}, config: null, columns: [], abort: null };

// -- the API ------------------------------------------------------------------------------------
function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("#api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers() });
  if (!response.ok) throw new Error(await errorText(response));
  return response.json();
}

async function errorText(response) {
  try {
    const body = await response.json();
    return `${response.status}: ${body.error ? body.error.message : JSON.stringify(body)}`;
  } catch (e) {
    return `${response.status} ${response.statusText}`;
  }
}

function say(text, isError = false) {
  const m = $("#message");
  m.textContent = text;
  m.classList.toggle("error", isError);
}

// -- colours ------------------------------------------------------------------------------------
function colour(p) {
  const x = Math.max(0, Math.min(1, p));
  const hue = Math.round(120 * Math.sqrt(x)); // red (unlikely) -> green (likely)
  return `hsl(${hue}, 80%, 82%)`;
}

function pct(p) {
  if (p === null || p === undefined) return "–";
  if (p === 0) return "0%";
  if (p >= 0.1) return (100 * p).toFixed(1) + "%";
  if (p >= 0.001) return (100 * p).toFixed(2) + "%";
  return (100 * p).toExponential(1) + "%";
}

function shown(text) {
  if (text === undefined) return "?";
  return text.replace(/\n/g, "⏎").replace(/\t/g, "⇥") || "∅";
}

// -- a column: a chain editor and its output -------------------------------------------------------
class Column {
  constructor(el) {
    this.el = el;
    this.name = el.dataset.name;
    el.append($("#column-template").content.cloneNode(true));
    $(".col-title", el).textContent = "Chain " + this.name;
    this.list = $("ol.chain", el);
    this.output = $(".output", el);
    this.status = $(".status", el);
    this.chain = [];
    this.traces = [];
    this.selected = null;
    this.presetSelect = $(".preset", el);
    this.presetSelect.addEventListener("change", () => this.usePreset(this.presetSelect.value));
    $(".add", el).addEventListener("click", () => this.add($(".add-name", el).value));
  }

  fillMenus() {
    const presets = this.presetSelect;
    presets.replaceChildren(new Option("server default", "@default"));
    for (const name of Object.keys(state.presets)) presets.append(new Option(name, name));
    presets.append(new Option("custom", "@custom"));
    const add = $(".add-name", this.el);
    add.replaceChildren();
    const entries = Object.values(state.processors).filter((e) => e.stage !== "context");
    entries.sort((a, b) => (a.stage === b.stage ? a.name.localeCompare(b.name) : a.stage === "selector" ? 1 : -1));
    for (const e of entries) add.append(new Option(`${e.name} (${e.stage})`, e.name));
  }

  usePreset(name) {
    if (name === "@custom") return;
    const chain = name === "@default" ? state.config.chain : state.presets[name];
    this.setChain(chain || []);
    this.presetSelect.value = name;
  }

  setChain(entries) {
    this.chain = entries.map((entry) => {
      if (typeof entry === "string") return { name: entry, values: {} };
      const [name, values] = Object.entries(entry)[0];
      return { name, values: { ...(values || {}) } };
    });
    this.render();
  }

  edited() {
    this.presetSelect.value = "@custom";
  }

  add(name) {
    const info = state.processors[name];
    if (!info) return;
    const values = {};
    for (const p of info.params) if (!p.required) values[p.name] = p.default;
    const item = { name, values };
    if (info.stage === "selector") {
      this.chain = this.chain.filter((c) => (state.processors[c.name] || {}).stage !== "selector");
      this.chain.push(item);
    } else {
      const at = this.chain.findIndex((c) => (state.processors[c.name] || {}).stage === "selector");
      this.chain.splice(at < 0 ? this.chain.length : at, 0, item);
    }
    this.edited();
    this.render();
  }

  move(i, by) {
    const j = i + by;
    if (j < 0 || j >= this.chain.length) return;
    [this.chain[i], this.chain[j]] = [this.chain[j], this.chain[i]];
    this.edited();
    this.render();
  }

  remove(i) {
    this.chain.splice(i, 1);
    this.edited();
    this.render();
  }

  render() {
    this.list.replaceChildren();
    this.chain.forEach((item, i) => {
      const info = state.processors[item.name] || { params: [], stage: "logits", summary: "" };
      const li = document.createElement("li");
      li.classList.toggle("selector", info.stage === "selector");
      li.title = info.summary || "";
      const moves = document.createElement("span");
      moves.className = "moves";
      for (const [label, action, tip] of [["↑", () => this.move(i, -1), "earlier"], ["↓", () => this.move(i, 1), "later"],
                                           ["✕", () => this.remove(i), "remove"]]) {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = label;
        b.title = tip;
        b.addEventListener("click", action);
        moves.append(b);
      }
      li.append(moves);
      const name = document.createElement("span");
      name.className = "proc";
      name.textContent = item.name;
      li.append(name);
      for (const p of info.params) li.append(this.paramInput(item, p));
      this.list.append(li);
    });
  }

  paramInput(item, p) {
    const label = document.createElement("label");
    label.title = `${p.help} (${p.allowed})`;
    label.append(p.name + " ");
    const value = item.values[p.name];
    const choices = /one of ([^()]+?)(?: or null)?$/.exec(p.allowed);
    let input;
    if (p.type === "bool") {
      input = document.createElement("input");
      input.type = "checkbox";
      input.checked = !!value;
      input.addEventListener("change", () => { item.values[p.name] = input.checked; this.edited(); });
    } else if (p.type === "str" && choices) {
      input = document.createElement("select");
      for (const c of choices[1].split(", ")) input.append(new Option(c, c));
      input.value = value ?? "";
      input.addEventListener("change", () => { item.values[p.name] = input.value; this.edited(); });
    } else {
      input = document.createElement("input");
      const numeric = p.type === "int" || p.type === "float";
      input.type = numeric ? "number" : "text";
      if (numeric) input.step = p.type === "int" ? "1" : "any";
      if (!numeric && p.type !== "str") input.className = "wide";
      input.value = value === null || value === undefined ? "" : (numeric || p.type === "str" ? String(value) : JSON.stringify(value));
      input.placeholder = value === null || value === undefined ? "null" : "";
      input.addEventListener("input", () => { item.values[p.name] = { raw: input.value, type: p.type }; this.edited(); });
    }
    input.dataset.param = p.name;
    label.append(input);
    return label;
  }

  config() {
    return this.chain.map((item) => {
      const values = {};
      for (const [k, v] of Object.entries(item.values)) {
        if (v && typeof v === "object" && "raw" in v) {
          const raw = v.raw.trim();
          if (raw === "") continue;
          if (v.type === "int" || v.type === "float") values[k] = Number(raw);
          else if (v.type === "str") values[k] = v.raw;
          else {
            try { values[k] = JSON.parse(raw); } catch (e) { throw new Error(`${item.name}.${k}: not JSON (${raw})`); }
          }
        } else {
          values[k] = v;
        }
      }
      return { [item.name]: values };
    });
  }

  // -- generating --------------------------------------------------------------------------------
  async run(prompt, maxTokens, seed, top, signal) {
    this.output.replaceChildren();
    this.traces = [];
    this.selected = null;
    const head = document.createElement("span");
    head.className = "prompt";
    head.textContent = prompt;
    this.output.append(head);
    this.status.textContent = "generating…";
    const started = performance.now();
    const body = {
      model: state.config.model, prompt, max_tokens: maxTokens, stream: true,
      samplekit: { chain: this.config(), trace: top },
    };
    if (seed !== null) body.seed = seed;
    const response = await fetch("/v1/completions", { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
    if (!response.ok) throw new Error(`chain ${this.name}: ${await errorText(response)}`);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "", finish = null, done = false;
    while (!done) {
      const { value, done: ended } = await reader.read();
      if (ended) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        const data = block.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
        if (!data) continue;
        if (data === "[DONE]") { done = true; break; }
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(`chain ${this.name}: ${chunk.error.message}`);
        for (const choice of chunk.choices || []) {
          this.take(choice);
          if (choice.finish_reason) finish = choice.finish_reason;
        }
      }
    }
    const seconds = (performance.now() - started) / 1000;
    this.status.textContent = `${this.traces.length} tokens in ${seconds.toFixed(2)} s · finish: ${finish || "?"}`;
    this.el.dataset.done = "1";
  }

  take(choice) {
    const trace = choice.samplekit_trace;
    if (!trace) {
      if (choice.text) this.output.append(document.createTextNode(choice.text));
      return;
    }
    const i = this.traces.length;
    this.traces.push(trace);
    const span = document.createElement("span");
    span.className = "tok";
    const end = state.config.eos_token_ids.includes(trace.token) && choice.finish_reason && !choice.text;
    span.textContent = end ? "end of text" : trace.texts[String(trace.token)];
    if (end) span.classList.add("end");
    span.style.backgroundColor = colour(trace.token_prob);
    span.dataset.step = String(i);
    span.addEventListener("mouseenter", () => { if (this.selected === null) showDetail(this, i); });
    span.addEventListener("click", () => this.select(i, span));
    this.output.append(span);
  }

  select(i, span) {
    for (const c of state.columns) {
      c.selected = null;
      for (const s of c.output.querySelectorAll(".tok.selected")) s.classList.remove("selected");
    }
    this.selected = i;
    span.classList.add("selected");
    showDetail(this, i);
  }
}

// -- the per-step view ------------------------------------------------------------------------------
function showDetail(column, i) {
  const trace = column.traces[i];
  const panel = $("#detail");
  panel.replaceChildren();
  const title = document.createElement("h3");
  const chosen = trace.texts[String(trace.token)];
  title.textContent = `Chain ${column.name}, step ${trace.step}: chose “${shown(chosen)}” (token ${trace.token}) — ` +
    `model probability ${pct(trace.token_prob)}, rank ${trace.token_rank + 1}`;
  panel.append(title);
  const table = document.createElement("table");
  table.className = "stages";
  const head = table.createTHead().insertRow();
  for (const stage of trace.stages) {
    const th = document.createElement("th");
    th.textContent = stage.name === "model" ? "model (raw)" : stage.name;
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = `${stage.support} tokens · H ${stage.entropy === null ? "–" : stage.entropy.toFixed(2)}` +
      (stage.name === "model" ? "" : ` · removed ${pct(stage.removed)}`);
    th.append(meta);
    head.append(th);
  }
  const rows = Math.max(...trace.stages.map((s) => s.top.length));
  const body = table.createTBody();
  for (let r = 0; r < rows; r++) {
    const tr = body.insertRow();
    for (const stage of trace.stages) {
      const td = tr.insertCell();
      const entry = stage.top[r];
      if (!entry || entry[1] <= 0) continue;
      const [token, p] = entry;
      if (token === trace.token) td.className = "chosen";
      const t = document.createElement("span");
      t.className = "t";
      t.textContent = shown(trace.texts[String(token)]);
      const q = document.createElement("span");
      q.className = "p";
      q.textContent = pct(p);
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = Math.max(1, Math.round(100 * p)) + "%";
      td.append(t, q, bar);
    }
  }
  const missing = trace.stages.filter((stage) => !stage.top.some((e) => e[0] === trace.token && e[1] > 0));
  if (missing.length) { // the chosen token is outside some stage's top candidates: one more row
    const tr = body.insertRow();
    tr.className = "outside";
    for (const stage of trace.stages) {
      const td = tr.insertCell();
      if (!missing.includes(stage)) continue;
      td.className = "chosen";
      const t = document.createElement("span");
      t.className = "t";
      t.textContent = shown(chosen);
      const q = document.createElement("span");
      q.className = "p";
      q.textContent = stage.name === "model" ? `${pct(trace.token_prob)} · rank ${trace.token_rank + 1}` : "below the top";
      td.append(t, q);
    }
  }
  panel.append(table);
}

// -- the page -------------------------------------------------------------------------------------------
async function generate() {
  const prompt = $("#prompt").value;
  const maxTokens = parseInt($("#max-tokens").value, 10) || 16;
  const seedText = $("#seed").value.trim();
  const seed = seedText === "" ? null : parseInt(seedText, 10);
  const top = Math.max(1, Math.min(20, parseInt($("#trace-top").value, 10) || 8));
  const columns = state.columns.filter((c) => !c.el.hidden);
  for (const c of state.columns) delete c.el.dataset.done;
  state.abort = new AbortController();
  $("#generate").disabled = true;
  $("#stop").disabled = false;
  say("");
  try {
    await Promise.all(columns.map((c) => c.run(prompt, maxTokens, seed, top, state.abort.signal)));
  } catch (e) {
    if (e.name === "AbortError") say("stopped");
    else say(e.message, true);
  } finally {
    $("#generate").disabled = false;
    $("#stop").disabled = true;
    state.abort = null;
  }
}

function legend() {
  const el = $("#legend");
  for (const p of [0.001, 0.01, 0.05, 0.2, 0.5, 0.9]) {
    const s = document.createElement("span");
    s.textContent = pct(p);
    s.style.backgroundColor = colour(p);
    el.append(s);
  }
}

async function load() {
  try {
    const [config, processors, presets] = await Promise.all([api("/v1/config"), api("/v1/processors"), api("/v1/presets")]);
    state.config = config;
    state.presets = presets;
    state.processors = {};
    for (const e of processors) state.processors[e.name] = e;
    $("#model-info").textContent = `model ${config.model} · context ${config.context_length ?? "unbounded"} tokens · ` +
      `${processors.length} processors`;
    for (const c of state.columns) c.fillMenus();
    state.columns[0].usePreset("@default");
    state.columns[1].usePreset("creative" in presets ? "creative" : "@default");
    say("");
    document.body.dataset.ready = "1";
  } catch (e) {
    say(`${e.message}${/^401/.test(e.message) ? " — enter the API key above" : ""}`, true);
  }
}

function main() {
  state.columns = [new Column($("#col-a")), new Column($("#col-b"))];
  const key = sessionStorage.getItem("samplekit-key");
  if (key) $("#api-key").value = key;
  $("#api-key").addEventListener("change", () => { sessionStorage.setItem("samplekit-key", $("#api-key").value); load(); });
  $("#compare").addEventListener("change", () => { $("#col-b").hidden = !$("#compare").checked; });
  $("#generate").addEventListener("click", generate);
  $("#stop").addEventListener("click", () => state.abort && state.abort.abort());
  $("#new-seed").addEventListener("click", () => { $("#seed").value = String(Math.floor(Math.random() * 2 ** 31)); });
  $("#prompt").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) generate(); });
  legend();
  load();
}

main();
