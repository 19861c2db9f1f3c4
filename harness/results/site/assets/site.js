// mnist-bench site: sorts a table by the heading clicked, and filters every table row and plotted
// trace by the filter bar. Rows carry their keys as data- attributes, Plotly traces in `meta`.
// Plotly draws the figures; this file draws nothing.
(function () {
  "use strict";

  function sortValue(row, index) {
    const cell = row.cells[index];
    if (!cell) return "";
    return cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
  }

  function isNumber(text) {
    return text !== "" && !isNaN(Number(text));
  }

  // Blank and "–" cells sort last either way; numbers as numbers, text as text.
  function compareCells(a, b, ascending) {
    const blankA = a === "" || a === "–", blankB = b === "" || b === "–";
    if (blankA || blankB) return blankA === blankB ? 0 : blankA ? 1 : -1;
    const order = isNumber(a) && isNumber(b) ? Number(a) - Number(b) : a.localeCompare(b, undefined, {numeric: true});
    return ascending ? order : -order;
  }

  function sortBy(table, header) {
    const index = Array.from(header.parentNode.cells).indexOf(header);
    const ascending = header.getAttribute("aria-sort") !== "ascending";
    for (const other of header.parentNode.cells) other.removeAttribute("aria-sort");
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const body = table.tBodies[0];
    const rows = Array.from(body.rows);
    rows.sort((x, y) => compareCells(sortValue(x, index), sortValue(y, index), ascending));
    for (const row of rows) body.appendChild(row);
  }

  // A key the row or trace does not carry does not exclude it; "a|b" carries both values.
  function matches(valueOf, chosen) {
    return Object.entries(chosen).every(([key, wanted]) => {
      const value = valueOf(key);
      return value === undefined || value === null || String(value).split("|").includes(wanted);
    });
  }

  function chosenKeys(form) {
    const chosen = {};
    for (const select of form.querySelectorAll("select[data-key]")) {
      if (select.value) chosen[select.dataset.key] = select.value;
    }
    return chosen;
  }

  function applyFilters(form) {
    const chosen = chosenKeys(form);
    const search = form.querySelector("input[type=search]");
    const text = search ? search.value.trim().toLowerCase() : "";
    for (const table of document.querySelectorAll("table.filterable")) {
      const rows = table.tBodies[0].rows;
      let shown = 0;
      for (const row of rows) {
        const keep = matches((key) => row.dataset[key], chosen) &&
          (!text || row.textContent.toLowerCase().includes(text));
        row.hidden = !keep;
        if (keep) shown += 1;
      }
      const count = document.querySelector(`[data-count-for="${table.id}"]`);
      if (count) count.textContent = `${shown} of ${rows.length} rows`;
    }
    if (!window.Plotly) return;
    for (const plot of document.querySelectorAll(".js-plotly-plot")) {
      const visible = plot.data.map((trace) => matches((key) => (trace.meta || {})[key], chosen));
      const box = plot.closest(".figure") || plot;
      box.hidden = false; // drawn while shown, so Plotly measures its real size
      window.Plotly.restyle(plot, {visible: visible});
      box.hidden = !visible.some(Boolean); // a figure with no row left is folded away
    }
  }

  function start() {
    for (const table of document.querySelectorAll("table.sortable")) {
      for (const header of table.tHead.rows[0].cells) {
        header.addEventListener("click", () => sortBy(table, header));
        header.addEventListener("keydown", (event) => {
          if (event.key === "Enter" || event.key === " ") {
            event.preventDefault();
            sortBy(table, header);
          }
        });
      }
    }
    for (const form of document.querySelectorAll("form.filters")) {
      form.addEventListener("change", () => applyFilters(form));
      form.addEventListener("input", () => applyFilters(form));
      applyFilters(form); // a reloaded page keeps its selections
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
