// The report's only script (inline, allowed by its hash in the page's Content-Security-Policy): filter every table
// by board, scheme and numerics, and sort any table by a click on its header. State lives in the URL fragment
// (#board=rpi-pico&numerics=int8&sort=Steps&order=desc), so a filtered view can be linked; without the script
// the page is the same report, unfiltered.
"use strict";
(function () {
  const form = document.getElementById("filters");
  if (!form) return;
  const keys = ["board", "scheme", "numerics"];

  function techniqueParts(technique) {
    const base = technique.split("@")[0];
    const cut = base.indexOf("-");
    return cut < 0 ? { scheme: base, numerics: "" } : { scheme: base.slice(0, cut), numerics: base.slice(cut + 1) };
  }

  function wanted() {
    const w = {};
    for (const k of keys) w[k] = form.elements[k].value;
    return w;
  }

  function matches(w, board, technique) {
    if (w.board && board !== null && board !== w.board) return false;
    if (technique === null) return true;
    const p = techniqueParts(technique);
    return (!w.scheme || p.scheme === w.scheme) && (!w.numerics || p.numerics === w.numerics);
  }

  function headerIndex(table, label) {
    const cells = table.tHead ? Array.from(table.tHead.rows[0].cells) : [];
    return cells.findIndex((c) => c.dataset.label === label || c.textContent.trim() === label);
  }

  function filterRows(w) {
    let shown = 0;
    let total = 0;
    for (const table of document.querySelectorAll("table")) {
      if (table.classList.contains("matrix")) continue;
      const iBoard = headerIndex(table, "Board");
      const iTech = headerIndex(table, "Technique");
      let lastVisible = true;
      for (const row of table.tBodies[0] ? table.tBodies[0].rows : []) {
        if (row.classList.contains("errrow")) { row.hidden = !lastVisible; continue; }
        const board = row.dataset.board ?? (iBoard >= 0 && row.cells[iBoard] ? row.cells[iBoard].textContent.trim() : null);
        const tech = row.dataset.technique ?? (iTech >= 0 && row.cells[iTech] ? row.cells[iTech].textContent.trim() : null);
        lastVisible = (board === null && tech === null) || matches(w, board, tech);
        row.hidden = !lastVisible;
        if (table.classList.contains("results")) { total += 1; shown += lastVisible ? 1 : 0; }
      }
    }
    return [shown, total];
  }

  function filterMatrix(w) {
    for (const table of document.querySelectorAll("table.matrix")) {
      const heads = Array.from(table.tHead.rows[0].cells);
      const keep = heads.map((h, i) => i === 0 || matches(w, null, h.textContent.trim()));
      heads.forEach((h, i) => { h.hidden = !keep[i]; });
      for (const row of table.tBodies[0].rows) {
        row.hidden = !matches(w, row.cells[0].textContent.trim(), null);
        Array.from(row.cells).forEach((c, i) => { c.hidden = !keep[i]; });
      }
    }
  }

  function number(text) {
    const m = text.replace(/,/g, "").match(/-?\d+(\.\d+)?(e[-+]?\d+)?/i);
    return m ? parseFloat(m[0]) : NaN;
  }

  function sortTable(table, index, descending) {
    const body = table.tBodies[0];
    if (!body) return;
    const groups = [];
    for (const row of Array.from(body.rows)) {
      if (row.classList.contains("errrow") && groups.length) groups[groups.length - 1].push(row);
      else groups.push([row]);
    }
    const key = (g) => {
      const cell = g[0].cells[index];
      return cell ? (cell.dataset.sort ?? cell.textContent.trim()) : "";
    };
    groups.sort((a, b) => {
      const x = key(a), y = key(b);
      const nx = number(x), ny = number(y);
      let c;
      if (!isNaN(nx) && !isNaN(ny)) c = nx - ny;
      else if (isNaN(nx) !== isNaN(ny)) return isNaN(nx) ? 1 : -1; // figures first, dashes last either way
      else c = x.localeCompare(y, undefined, { numeric: true });
      return descending ? -c : c;
    });
    for (const g of groups) for (const row of g) body.appendChild(row);
    Array.from(table.tHead.rows[0].cells).forEach((h, i) => {
      if (i === index) h.setAttribute("aria-sort", descending ? "descending" : "ascending");
      else h.removeAttribute("aria-sort");
    });
  }

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    if (!Array.from(params.keys()).some((k) => keys.includes(k) || k === "sort")) return null;
    return params;
  }

  function writeHash(extra) {
    const params = new URLSearchParams();
    const w = wanted();
    for (const k of keys) if (w[k]) params.set(k, w[k]);
    for (const [k, v] of Object.entries(extra || {})) params.set(k, v);
    history.replaceState(null, "", params.toString() ? "#" + params.toString() : location.pathname);
  }

  let sortState = {};
  function apply() {
    const w = wanted();
    const [shown, total] = filterRows(w);
    filterMatrix(w);
    const active = keys.some((k) => w[k]);
    document.getElementById("filter-count").textContent =
      active ? `showing ${shown} of ${total} runs in the tables` : `${total} runs`;
  }

  for (const table of document.querySelectorAll("table")) {
    if (!table.tHead || table.classList.contains("matrix")) continue;
    Array.from(table.tHead.rows[0].cells).forEach((h, i) => {
      h.classList.add("sortable");
      h.title = "sort by this column";
      h.addEventListener("click", () => {
        const descending = h.getAttribute("aria-sort") === "ascending";
        sortTable(table, i, descending);
        sortState = { sort: h.dataset.label || h.textContent.trim(), order: descending ? "desc" : "asc" };
        writeHash(sortState);
      });
    });
  }

  form.addEventListener("change", () => { apply(); writeHash(sortState); });
  form.addEventListener("reset", () => setTimeout(() => { apply(); writeHash(sortState); }, 0));

  const params = readHash();
  if (params) {
    for (const k of keys) {
      const v = params.get(k);
      if (v !== null && Array.from(form.elements[k].options).some((o) => o.value === v)) form.elements[k].value = v;
    }
    const by = params.get("sort");
    if (by) {
      const descending = params.get("order") === "desc";
      for (const table of document.querySelectorAll("table")) {
        if (table.classList.contains("matrix")) continue;
        const i = headerIndex(table, by);
        if (i >= 0) sortTable(table, i, descending);
      }
      sortState = { sort: by, order: descending ? "desc" : "asc" };
    }
  }
  form.hidden = false;
  apply();
})();
