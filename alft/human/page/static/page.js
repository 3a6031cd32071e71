(function () {
  "use strict";
  var boot = JSON.parse(document.getElementById("alft-boot").textContent);
  var params = new URLSearchParams(location.search);
  var token = params.get("token") || "";
  var $ = function (id) { return document.getElementById(id); };
  var state = {
    annotator: null, data: null, example: null, round: null,
    skipped: [], matches: [], chosen: -1, command: false, busy: false, lastPoll: 0
  };
  var STORE_KEY = "alft.annotator";

  function norm(s) { return String(s).toLowerCase().replace(/[_\-\s]+/g, " ").trim(); }
  var labelNorm = boot.labels.map(norm);

  function say(text, cls) { var m = $("msg"); m.textContent = text || ""; m.className = cls || ""; }

  function api(method, path, body) {
    var opts = { method: method, headers: {}, credentials: "same-origin", cache: "no-store" };
    opts.headers[boot.tokenHeader] = token;
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    return fetch(path, opts).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (j) {
        if (!r.ok) { var err = new Error(j.error || ("HTTP " + r.status)); err.status = r.status; throw err; }
        return j;
      });
    });
  }

  // ------------------------------------------------------------ annotator
  function askAnnotator() {
    $("who").hidden = false;
    $("who-name").value = state.annotator || "";
    $("who-name").focus();
  }
  $("who").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var v = $("who-name").value.trim();
    if (!v) { return; }
    setAnnotator(v);
    $("who").hidden = true;
    $("filter").focus();
    load();
  });
  function setAnnotator(v) {
    state.annotator = v.slice(0, 128);
    try { localStorage.setItem(STORE_KEY, state.annotator); } catch { /* private mode */ }
    $("annotator").textContent = state.annotator;
  }

  // ------------------------------------------------------------ labels list
  function rank(i, q) {
    var l = labelNorm[i];
    if (!q || l === q) { return 0; }
    if (l.indexOf(q) === 0) { return 1; }
    var words = l.split(" ");
    if (words.some(function (w) { return w.indexOf(q) === 0; })) { return 2; }
    if (l.indexOf(q) >= 0) { return 3; }
    var parts = q.split(" ");
    if (parts.every(function (p) { return words.some(function (w) { return w.indexOf(p) === 0; }); })) { return 4; }
    if (l.replace(/ /g, "").indexOf(q.replace(/ /g, "")) >= 0) { return 5; }
    return -1;
  }

  function suggestionProb(label) {
    var ex = state.example;
    if (!ex || !ex.suggestions) { return null; }
    for (var i = 0; i < ex.suggestions.length; i++) {
      // below 5% a class is noise, not a suggestion worth ranking or showing
      if (ex.suggestions[i].label === label) { return ex.suggestions[i].p >= 0.05 ? ex.suggestions[i].p : null; }
    }
    return null;
  }

  function refilter() {
    var q = norm($("filter").value);
    var out = [];
    for (var i = 0; i < boot.labels.length; i++) {
      var r = rank(i, q);
      if (r < 0) { continue; }
      var p = suggestionProb(boot.labels[i]);
      out.push({ i: i, r: r, p: p === null ? -1 : p });
    }
    out.sort(function (a, b) { return (a.r - b.r) || (b.p - a.p) || (a.i - b.i); });
    state.matches = out.map(function (m) { return m.i; });
    if (q) { state.chosen = state.matches.length ? 0 : -1; }
    else {
      // only a confident proposal is pre-selected: Enter must never rubber-stamp a guess
      var prop = state.example && state.example.proposal;
      state.chosen = prop && prop.preselect ? state.matches.indexOf(boot.labels.indexOf(prop.label)) : -1;
    }
    drawMatches();
    showMode();
  }

  function showMode() {
    var f = $("filter");
    $("mode").textContent = state.command ? "shortcuts: S skip · U unsure · Backspace undo · a letter filters" :
      (f.value !== "" ? "filtering · Esc clears" : "");
  }

  function drawMatches() {
    var ol = $("matches");
    while (ol.firstChild) { ol.removeChild(ol.firstChild); }
    var prop = state.example && state.example.proposal;
    var sugg = prop ? prop.label : null;
    state.matches.forEach(function (li, n) {
      var item = document.createElement("li");
      var k = document.createElement("span");
      k.className = "k";
      k.textContent = n < 9 ? String(n + 1) : "";
      var name = document.createElement("span");
      name.textContent = boot.labels[li];
      item.appendChild(k);
      item.appendChild(name);
      var p = suggestionProb(boot.labels[li]);
      if (p !== null) {
        var ps = document.createElement("span");
        ps.className = "p";
        ps.textContent = Math.round(p * 100) + "%";
        item.appendChild(ps);
      }
      if (boot.labels[li] === sugg) { item.classList.add("sugg"); }
      if (n === state.chosen) { item.classList.add("chosen"); item.setAttribute("aria-selected", "true"); }
      item.dataset.n = String(n);
      item.addEventListener("click", function () { state.chosen = n; drawMatches(); $("filter").focus(); });
      item.addEventListener("dblclick", function () { state.chosen = n; submitChosen(); });
      ol.appendChild(item);
    });
    var chosen = state.chosen >= 0 ? boot.labels[state.matches[state.chosen]] : null;
    $("chosen").textContent = chosen || "—";
    var c = ol.querySelector(".chosen");
    if (c && c.scrollIntoView) { c.scrollIntoView({ block: "nearest" }); }
  }

  function clearFilter() { $("filter").value = ""; refilter(); }

  // ------------------------------------------------------------ showing
  function pct(x) { return x === null || x === undefined ? "–" : Math.round(x * 100) + "%"; }

  function render(d) {
    state.data = d;
    state.example = d.example;
    state.round = d.round;
    var b = d.batch;
    $("round").textContent = d.round === null || d.round === undefined ? "–" : String(d.round);
    $("bar").max = b ? Math.max(1, b.size) : 1;
    $("bar").value = b ? b.done : 0;
    $("batchcount").textContent = b ? (b.done + " / " + b.size + " in this batch" +
      (b.queue !== undefined ? " · " + b.queue + " left for you" : "")) : "no batch waiting";
    $("labeled").textContent = d.labeled + " / " + d.budget + " labels (campaign)";
    var a = d.agreement || {};
    $("agree").textContent = a.pairs ? ("agreement " + pct(a.percent) + " over " + a.n_items + " examples" +
      (a.kappa === null || a.kappa === undefined ? "" : " · κ " + a.kappa.toFixed(2))) :
      (d.overlap > 1 ? "agreement: no shared examples yet" : "");
    var ex = d.example;
    if (!ex) {
      $("text").textContent = d.message || "Nothing to label.";
      $("exmeta").textContent = "";
      $("sugg").textContent = "";
    } else {
      $("text").textContent = ex.text;
      var meta = "example " + ex.id + " · #" + (ex.position + 1) + " of round " + ex.round + " (" + ex.strategy + ")";
      if (d.overlap > 1) { meta += " · " + ex.votes + " vote(s), needs " + ex.needs + (ex.status === "disputed" ? " · disputed" : ""); }
      if (ex.tally) {
        meta += " · votes: " + ex.tally.map(function (t) { return short(t[0]) + " ×" + t[1]; }).join(", ");
        if (ex.your_vote) { meta += " (yours: " + short(ex.your_vote) + ")"; }
      }
      if (ex.unsure) { meta += " · you marked it unsure"; }
      $("exmeta").textContent = meta;
      var s = $("sugg");
      while (s.firstChild) { s.removeChild(s.firstChild); }
      var prop = ex.proposal;
      if (prop) {
        var who = { llm: "LLM", pooled: "model + LLM" }[prop.source] || "model";
        s.appendChild(document.createTextNode(who + " suggests "));
        var bEl = document.createElement("b");
        bEl.textContent = prop.label;
        s.appendChild(bEl);
        s.appendChild(document.createTextNode(" (" + pct(prop.confidence) + " confident) · " + (prop.preselect ?
          "Enter accepts it" : "not pre-selected below " + pct(boot.preselect) + ": choose a label")));
      } else {
        s.textContent = "no suggestion for this example";
      }
    }
    if (GEN) {
      $("text").textContent = ex ? ex.instruction : (d.message || "Nothing to label.");
      $("input").textContent = ex ? ex.input : "";
      $("response").value = ex ? (ex.draft || "") : "";
      $("response").disabled = !ex;
      $("genlabel").textContent = ex && ex.draft ? "Correct the draft response (Ctrl+Enter saves)" :
        "Write the response (Ctrl+Enter saves)";
      $("sugg").textContent = "";
    }
    $("undoinfo").textContent = d.undo ? ((GEN ? "Backspace" : "Alt+Backspace") + " undoes: " + short(d.undo.label) + " on " + d.undo.id) : "";
    document.body.dataset.exampleId = ex ? ex.id : "";
    state.command = false;
    clearFilter();
    if (!GEN && $("who").hidden) { $("filter").focus(); }
    document.body.dataset.ready = "1";
  }

  function load(first) {
    if (!state.annotator) { askAnnotator(); return Promise.resolve(); }
    var q = new URLSearchParams();
    q.set("annotator", state.annotator);
    state.skipped.forEach(function (id) { q.append("skip", id); });
    if (first) { q.set("first", first); }
    document.body.dataset.ready = "0";
    return api("GET", "/api/next?" + q.toString()).then(render).catch(function (e) {
      say(e.message, "err");
      document.body.dataset.ready = "1";
    });
  }

  function post(items, okText) {
    if (state.busy) { return Promise.resolve(false); }
    state.busy = true;
    document.body.dataset.ready = "0";
    return api("POST", "/api/labels", { round: state.round, annotator: state.annotator, items: items })
      .then(function (r) {
        items.forEach(function (it) { state.skipped = state.skipped.filter(function (x) { return x !== it.id; }); });
        say(okText + (r.complete ? " · the batch is complete" : ""), "ok");
        return true;
      })
      .catch(function (e) { say(e.message, "err"); return false; })
      .finally(function () { state.busy = false; });
  }

  var GEN = boot.mode === "generation";
  function short(t) { t = String(t); return t.length > 60 ? t.slice(0, 57) + "…" : t; }

  function submitResponse() {
    var ex = state.example;
    if (!ex || state.busy) { return; }
    var text = $("response").value;
    if (!text.trim()) { say("write the response first (E or a click puts you in the text box)", "err"); return; }
    var item = { id: ex.id, label: text, kind: "label" };
    if (ex.draft_proposed) { item.shown = { draft: true }; }  // the server knows the draft's text
    post([item], "saved the response to " + ex.id).then(function (ok) {
      if (ok) { $("response").blur(); load(); }
    });
  }

  function submitChosen() {
    if (GEN) { submitResponse(); return; }
    var ex = state.example;
    if (!ex || state.busy) { return; }
    if (state.chosen < 0) { say("choose a label first: type to filter, 1–9 to pick", "err"); return; }
    var label = boot.labels[state.matches[state.chosen]];
    var item = { id: ex.id, label: label, kind: "label" };
    // what was shown with it: the label is stored as accepted (equal) or corrected
    if (ex.proposal) { item.shown = { label: ex.proposal.label, confidence: ex.proposal.confidence }; }
    post([item], "labeled " + ex.id + " as " + label).then(function () { load(); });
  }

  function unsure() {
    var ex = state.example;
    if (!ex || state.busy) { return; }
    post([{ id: ex.id, label: null, kind: "unsure" }], "marked " + ex.id + " unsure").then(function () { load(); });
  }

  function skip() {
    var ex = state.example;
    if (!ex || state.busy) { return; }
    state.skipped = state.skipped.filter(function (x) { return x !== ex.id; });
    state.skipped.push(ex.id);
    say("skipped " + ex.id + " (it comes back at the end)", "ok");
    load();
  }

  function undo() {
    var u = state.data && state.data.undo;
    if (state.busy) { return; }
    if (!u) { say("nothing to undo", "err"); return; }
    post([{ id: u.id, label: null, kind: "retract" }], "undid " + u.label + " on " + u.id).then(function (ok) {
      load(ok ? u.id : undefined);
    });
  }

  // ------------------------------------------------------------ keys
  document.addEventListener("keydown", function (ev) {
    if (!$("who").hidden) { return; }
    if (GEN) {
      // the text box takes every key but Ctrl+Enter (save) and Esc (back to the shortcuts)
      var inBox = document.activeElement === $("response");
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); submitResponse(); return; }
      if (inBox) { if (ev.key === "Escape") { ev.preventDefault(); $("response").blur(); } return; }
      if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
      var g = ev.key;
      if (g === "Enter") { ev.preventDefault(); submitResponse(); return; }
      if (g === "e" || g === "E") { ev.preventDefault(); $("response").focus(); return; }
      if (g === "s" || g === "S") { ev.preventDefault(); skip(); return; }
      if (g === "u" || g === "U") { ev.preventDefault(); unsure(); return; }
      if (g === "Backspace") { ev.preventDefault(); undo(); return; }
      return;
    }
    var f = $("filter");
    var k = ev.key;
    if (ev.altKey && !ev.ctrlKey && !ev.metaKey) {
      // Alt + S, U, Backspace: the shortcuts from anywhere (ev.code: Alt changes ev.key on a Mac)
      if (ev.code === "KeyS") { ev.preventDefault(); skip(); return; }
      if (ev.code === "KeyU") { ev.preventDefault(); unsure(); return; }
      if (k === "Backspace") { ev.preventDefault(); undo(); return; }
      return;
    }
    if (ev.ctrlKey || ev.metaKey) { return; }
    if (k === "Enter") { ev.preventDefault(); submitChosen(); return; }
    if (k === "Escape") {
      ev.preventDefault();
      // Esc clears the filter; Esc on an empty one leaves it: S, U, Backspace work without Alt
      if (f.value !== "") { clearFilter(); f.focus(); } else { state.command = true; f.blur(); showMode(); }
      return;
    }
    if (/^[1-9]$/.test(k)) {
      ev.preventDefault();
      var n = Number(k) - 1;
      if (n < state.matches.length) { state.chosen = n; drawMatches(); }
      return;
    }
    if (k === "ArrowDown" || k === "ArrowUp") {
      ev.preventDefault();
      if (!state.matches.length) { return; }
      var c = state.chosen < 0 ? (k === "ArrowDown" ? 0 : state.matches.length - 1) :
        (state.chosen + (k === "ArrowDown" ? 1 : -1) + state.matches.length) % state.matches.length;
      state.chosen = c; drawMatches(); return;
    }
    if (state.command) {
      // left the filter box on purpose (Esc): single keys are shortcuts here
      if (k === "s" || k === "S") { ev.preventDefault(); skip(); return; }
      if (k === "u" || k === "U") { ev.preventDefault(); unsure(); return; }
      if (k === "Backspace") { ev.preventDefault(); undo(); return; }
      if (k === "/") { ev.preventDefault(); f.focus(); return; }
    }
    // "/" was the old way to type a label starting with s or u: harmless in an empty filter
    if (k === "/" && f.value === "") { ev.preventDefault(); f.focus(); return; }
    // every other letter filters, wherever the focus was
    if (document.activeElement !== f && k.length === 1) { f.focus(); }
  }, true);
  $("filter").addEventListener("focus", function () { state.command = false; showMode(); });
  $("filter").addEventListener("input", refilter);
  $("b-submit").addEventListener("click", submitChosen);
  $("b-skip").addEventListener("click", skip);
  $("b-unsure").addEventListener("click", unsure);
  $("b-undo").addEventListener("click", undo);
  $("b-who").addEventListener("click", askAnnotator);

  // a new batch, or other annotators' progress, shows up without a reload
  setInterval(function () {
    if (state.busy || !state.annotator || !$("who").hidden) { return; }
    if (!state.example) { load(); return; }
    api("GET", "/api/status").then(function (d) {
      if (d.round !== state.round) { load(); return; }
      var b = d.batch;
      if (b) { $("bar").max = Math.max(1, b.size); $("bar").value = b.done; }
      $("labeled").textContent = d.labeled + " / " + d.budget + " labels (campaign)";
    }).catch(function () { /* shown on the next action */ });
  }, 5000);

  // ------------------------------------------------------------ start
  var fromUrl = params.get("annotator");
  var saved = null;
  try { saved = localStorage.getItem(STORE_KEY); } catch { saved = null; }
  var who = fromUrl || saved || boot.defaultAnnotator;
  if (GEN) {
    $("gen").hidden = false; $("filterrow").hidden = true; $("matches").hidden = true;
    $("b-skip").textContent = "Skip (S)"; $("b-unsure").textContent = "Unsure (U)"; $("b-undo").textContent = "Undo (Backspace)";
    $("keys").textContent = "Ctrl+Enter save · E edit · Esc leave the text box · Enter save (outside it) · " +
      "S skip · U unsure · Backspace undo your last response (outside it)";
  }
  if (who) { setAnnotator(who); load(); } else { askAnnotator(); }
  refilter();
})();
