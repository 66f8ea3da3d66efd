// appregistry: the header "select all" boxes and the tokens dialog. The pages work without it.
"use strict";

// A header box selects (or clears) every row box of its form.
function wireSelectAll(root) {
  for (const all of root.querySelectorAll("input[data-select-all]")) {
    const rows = () => root.querySelectorAll(
      `input[type=checkbox][form="${all.dataset.selectAll}"]:not([data-select-all])`);
    all.hidden = false;
    all.addEventListener("change", () => { for (const box of rows()) box.checked = all.checked; });
    for (const box of rows()) {
      box.addEventListener("change", () => { if (!box.checked) all.checked = false; });
    }
  }
}

// The "N token(s)" links open the tokens page in a <dialog>; searching, paging and removing
// happen inside it, and closing it reloads the list so that the counts are current.
const dialog = document.getElementById("tokens-dialog");
let changed = false;

async function load(url, options) {
  const response = await fetch(url, { credentials: "same-origin", ...options });
  const page = new DOMParser().parseFromString(await response.text(), "text/html");
  const content = page.querySelector("[data-dialog-content]");
  if (!content) { window.location.href = response.url; return; }
  const flash = page.querySelector(".flash");
  dialog.replaceChildren(...(flash ? [flash] : []), content);
  for (const field of dialog.querySelectorAll("[data-return-to]")) field.value = "tokens";
  wireSelectAll(dialog);
  if (!dialog.open) dialog.showModal();
  (dialog.querySelector("h1") || dialog).focus();
}

if (dialog) {
  dialog.tabIndex = -1;
  document.addEventListener("click", (event) => {
    const link = event.target.closest("a[data-dialog]");
    if (link) { event.preventDefault(); load(link.href); }
  });
  dialog.addEventListener("click", (event) => {
    const link = event.target.closest("a");
    if (!link) return;
    event.preventDefault();
    if (link.hasAttribute("data-dismiss")) dialog.close(); else load(link.href);
  });
  dialog.addEventListener("submit", (event) => {
    const form = event.target;
    event.preventDefault();
    const data = new URLSearchParams(new FormData(form, event.submitter));
    if (form.method === "post") {
      changed = true;
      load(form.action, { method: "POST", body: data });
    } else {
      load(`${form.action}?${data}`);
    }
  });
  dialog.addEventListener("close", () => { if (changed) window.location.reload(); });
}

wireSelectAll(document);
