// ktx's chat page: conversations in localStorage, answers streamed from /v1/chat/completions.
// Model output is only ever placed with textContent: renderMarkdown builds DOM nodes itself,
// so nothing the model writes is interpreted as HTML.

const $ = (id) => document.getElementById(id);
const STORE = "ktx.conversations";
const SETTINGS = "ktx.settings";

let conversations = JSON.parse(localStorage.getItem(STORE) || "[]");
let current = null; // the open conversation
let controller = null; // AbortController of the answer being streamed

// ---- Markdown -> DOM (a safe subset: paragraphs, headings, lists, code, emphasis, links) ----
function el(tag, text) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  return node;
}

function inline(parent, text) {
  // `code`, **bold**, *italic*, [label](http...) ; everything else is text
  const pattern = /(`[^`]+`)|(\*\*[^*]+\*\*)|(\*[^*\s][^*]*\*)|(\[[^\]]+\]\((https?:\/\/[^\s)]+)\))/g;
  let last = 0;
  for (const m of text.matchAll(pattern)) {
    if (m.index > last) parent.append(text.slice(last, m.index));
    const tok = m[0];
    if (m[1]) parent.append(el("code", tok.slice(1, -1)));
    else if (m[2]) parent.append(el("strong", tok.slice(2, -2)));
    else if (m[3]) parent.append(el("em", tok.slice(1, -1)));
    else {
      const a = el("a", tok.slice(1, tok.indexOf("](")));
      a.href = m[5];
      a.rel = "noopener noreferrer";
      a.target = "_blank";
      parent.append(a);
    }
    last = m.index + tok.length;
  }
  if (last < text.length) parent.append(text.slice(last));
}

function codeBlock(lang, code) {
  const pre = el("pre");
  const head = el("div");
  head.className = "code-head";
  head.append(el("span", lang || "code"));
  const copy = el("button", "copy");
  copy.type = "button";
  copy.addEventListener("click", () => navigator.clipboard?.writeText(code));
  head.append(copy);
  pre.append(head, el("code", code));
  return pre;
}

export function renderMarkdown(text) {
  const root = document.createDocumentFragment();
  const lines = text.split("\n");
  let para = [];
  let list = null;
  const flushPara = () => {
    if (para.length) {
      const p = el("p");
      inline(p, para.join("\n"));
      root.append(p);
      para = [];
    }
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = line.match(/^```\s*([\w+-]*)/);
    if (fence) {
      flushPara();
      list = null;
      const body = [];
      for (i++; i < lines.length && !lines[i].startsWith("```"); i++) body.push(lines[i]);
      root.append(codeBlock(fence[1], body.join("\n")));
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*)/);
    const item = line.match(/^\s*([-*+]|\d+[.)])\s+(.*)/);
    if (heading) {
      flushPara();
      list = null;
      const h = el(`h${Math.min(6, heading[1].length + 2)}`);
      inline(h, heading[2]);
      root.append(h);
    } else if (item) {
      flushPara();
      const kind = /\d/.test(item[1]) ? "ol" : "ul";
      if (!list || list.tagName.toLowerCase() !== kind) {
        list = el(kind);
        root.append(list);
      }
      const li = el("li");
      inline(li, item[2]);
      list.append(li);
    } else if (!line.trim()) {
      flushPara();
      list = null;
    } else {
      list = null;
      para.push(line);
    }
  }
  flushPara();
  return root;
}
window.ktxRenderMarkdown = renderMarkdown; // for the page's tests

// ---- settings and storage ----------------------------------------------------------------
function settings() {
  return {
    model: $("model").value || undefined,
    temperature: Number($("temperature").value),
    top_p: Number($("top-p").value),
    max_tokens: Number($("max-tokens").value),
    system: $("system").value,
    key: $("api-key").value,
  };
}

function saveSettings() {
  const s = settings();
  localStorage.setItem(SETTINGS, JSON.stringify({ ...s, model: $("model").value }));
}

function loadSettings() {
  const s = JSON.parse(localStorage.getItem(SETTINGS) || "{}");
  if (s.temperature !== undefined) $("temperature").value = s.temperature;
  if (s.top_p !== undefined) $("top-p").value = s.top_p;
  if (s.max_tokens !== undefined) $("max-tokens").value = s.max_tokens;
  if (s.system) $("system").value = s.system;
  if (s.key) $("api-key").value = s.key;
  return s;
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value;
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

function save() {
  localStorage.setItem(STORE, JSON.stringify(conversations));
}

// ---- conversations -----------------------------------------------------------------------
function newConversation() {
  current = { id: crypto.randomUUID?.() || String(Date.now()), title: "New chat", messages: [] };
  conversations.unshift(current);
  save();
  renderList();
  renderMessages();
}

function renderList() {
  const ul = $("conversations");
  ul.replaceChildren();
  for (const c of conversations) {
    const li = el("li");
    if (c === current) li.className = "active";
    const open = el("button", c.title);
    open.className = "open";
    open.type = "button";
    open.addEventListener("click", () => {
      if (controller) return; // finish or stop the answer first
      current = c;
      renderList();
      renderMessages();
    });
    const del = el("button", "✕");
    del.className = "delete";
    del.type = "button";
    del.setAttribute("aria-label", `Delete ${c.title}`);
    del.addEventListener("click", () => {
      if (controller && c === current) return;
      conversations = conversations.filter((x) => x !== c);
      if (c === current) current = conversations[0] || null;
      save();
      if (!current) newConversation();
      renderList();
      renderMessages();
    });
    li.append(open, del);
    ul.append(li);
  }
}

function messageNode(m) {
  const div = el("div");
  div.className = "message";
  div.dataset.role = m.role;
  fillMessage(div, m);
  return div;
}

function fillMessage(div, m) {
  div.replaceChildren();
  // an answer's leading newlines (models often start with one) would open with a blank line
  if (m.role === "assistant") div.append(renderMarkdown(m.content.replace(/^\s+/, "")));
  else div.textContent = m.content;
  for (const kind of ["error", "stats"]) {
    if (!m[kind]) continue;
    const extra = el("div", m[kind]);
    extra.className = kind;
    div.append(extra);
  }
  if (m.role === "assistant" && m.done) div.dataset.done = "true";
}

const EMPTY =
  "Type a message below: Enter sends, Shift+Enter starts a new line. The panel on the left holds " +
  "the model, the sampling, a system prompt and the API key; conversations stay in this browser.";

function renderMessages() {
  const box = $("messages");
  const messages = current ? current.messages.map(messageNode) : [];
  if (!messages.length) {
    const hint = el("p", EMPTY);
    hint.className = "empty";
    messages.push(hint);
  }
  box.replaceChildren(...messages);
  box.scrollTop = box.scrollHeight;
}

// ---- streaming an answer -----------------------------------------------------------------
async function send(text) {
  const s = settings();
  current.messages.push({ role: "user", content: text });
  if (current.title === "New chat") current.title = text.slice(0, 40);
  const answer = { role: "assistant", content: "", done: false };
  current.messages.push(answer);
  save();
  renderList();
  renderMessages();
  const node = $("messages").lastChild;
  controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  $("status").textContent = "…";
  const started = performance.now();
  let first = null;
  let chunks = 0;
  let usage = null;
  try {
    const history = current.messages.slice(0, -1).map(({ role, content }) => ({ role, content }));
    if (s.system.trim()) history.unshift({ role: "system", content: s.system });
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      signal: controller.signal,
      body: JSON.stringify({
        model: s.model,
        messages: history,
        stream: true,
        stream_options: { include_usage: true },
        temperature: s.temperature,
        top_p: s.top_p,
        max_tokens: s.max_tokens,
      }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.error?.message || `HTTP ${response.status}`);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 2);
        if (!event.startsWith("data: ")) continue;
        const data = event.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message || "generation failed");
        if (chunk.usage) usage = chunk.usage;
        const piece = chunk.choices?.[0]?.delta?.content;
        if (piece) {
          first ??= performance.now();
          chunks += 1;
          answer.content += piece;
          fillMessage(node, answer);
          $("messages").scrollTop = $("messages").scrollHeight;
        }
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") answer.error = String(e.message || e);
  } finally {
    const end = performance.now();
    const tokens = usage?.completion_tokens ?? chunks;
    if (first !== null) {
      const rate = tokens > 1 ? ((tokens - 1) / ((end - first) / 1000)).toFixed(1) : "–";
      answer.stats = `${tokens} tokens · ${rate} tok/s · first token ${((first - started) / 1000).toFixed(2)} s`;
      if (controller.signal.aborted) answer.stats += " · stopped";
    }
    answer.done = true;
    controller = null;
    fillMessage(node, answer);
    save();
    $("send").disabled = false;
    $("stop").disabled = true;
    $("status").textContent = "";
  }
}

// ---- start-up ----------------------------------------------------------------------------
async function loadModels(preferred) {
  try {
    const r = await fetch("/v1/models", { headers: headers() });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const { data } = await r.json();
    $("model").replaceChildren(...data.map((m) => el("option", m.id)));
    if (preferred && data.some((m) => m.id === preferred)) $("model").value = preferred;
    $("status").textContent = "";
  } catch (e) {
    $("status").textContent = `could not list models (${e.message}): an API key may be needed (Settings)`;
  }
}

function start() {
  const s = loadSettings();
  for (const id of ["temperature", "top-p", "max-tokens", "model", "system"]) $(id).addEventListener("change", saveSettings);
  $("api-key").addEventListener("change", () => {
    saveSettings();
    loadModels($("model").value);
  });
  loadModels(s.model);
  current = conversations[0] || null;
  if (!current) newConversation();
  renderList();
  renderMessages();
  $("new-chat").addEventListener("click", () => controller || newConversation());
  $("stop").addEventListener("click", () => controller?.abort());
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("input").value.trim();
    if (!text || controller) return;
    $("input").value = "";
    send(text);
  });
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
}

start();
