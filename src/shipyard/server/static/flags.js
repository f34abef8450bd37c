// shipyard dashboard, flag pages: enhancements only. Every form works without this file (the
// server renders a spare empty condition and variant row, and filters on submit).
"use strict";

// The list's filters apply as soon as a select or the archive box changes.
document.querySelectorAll("form[data-autosubmit]").forEach((form) => {
  form.addEventListener("change", (event) => {
    if (event.target instanceof HTMLSelectElement || event.target.type === "checkbox") {
      form.requestSubmit();
    }
  });
});

// The rollout slider shows its value as it moves.
document.querySelectorAll('input[type="range"]').forEach((slider) => {
  const shown = document.querySelector(`output[for="${slider.id}"]`);
  if (shown) {
    slider.addEventListener("input", () => {
      shown.textContent = `${slider.value} %`;
    });
  }
});

// Serve a value or a split: show the fields of the one chosen.
const builder = document.querySelector("form.rule-builder");
if (builder) {
  const showServed = () => {
    const chosen = builder.querySelector('input[name="serve"]:checked');
    builder.querySelectorAll("[data-serve]").forEach((part) => {
      part.hidden = !chosen || part.dataset.serve !== chosen.value;
    });
  };
  builder.addEventListener("change", (event) => {
    if (event.target.name === "serve") {
      showServed();
    }
  });
  showServed();
}

// Rows of conditions and variants: add one (a copy of the last, emptied), remove one. A row's
// checkboxes post the row's key (`data-row-key`, also in a hidden field): a copy gets a new one.
function emptied(row, index) {
  const copy = row.cloneNode(true);
  copy.querySelectorAll(".field-error").forEach((error) => error.remove());
  copy.querySelectorAll("input, select, textarea").forEach((field) => {
    field.removeAttribute("aria-invalid");
    field.removeAttribute("aria-describedby");
    if (field instanceof HTMLSelectElement) {
      field.selectedIndex = 0;
    } else if (field.hasAttribute("data-row-key")) {
      field.value = String(index);
      field.checked = false;
    } else {
      field.value = "";
    }
    if (!field.id) {
      return;
    }
    const id = field.id.replace(/-\d+$/, `-${index}`);
    const label = copy.querySelector(`label[for="${field.id}"]`);
    if (label) {
      label.htmlFor = id;
    }
    field.id = id;
  });
  return copy;
}

function removable(row) {
  const button = row.querySelector("[data-remove-row]");
  if (!button) {
    return;
  }
  button.hidden = false;
  button.addEventListener("click", () => {
    const rows = row.parentElement;
    if (rows.querySelectorAll("[data-row]").length > 1) {
      row.remove();
    } else {
      row.replaceWith(emptied(row, 0));
      removable(rows.querySelector("[data-row]"));
    }
  });
}

document.querySelectorAll("[data-rows]").forEach((rows) => {
  const all = rows.querySelectorAll("[data-row]");
  // The spare empty row is for browsers without this file: an "Add" button replaces it.
  const last = all[all.length - 1];
  const typed = last ? last.querySelectorAll("input:not([data-row-key]), textarea") : [];
  const blank = last && [...typed].every((field) => field.value === "");
  if (blank && all.length > 1) {
    last.remove();
  }
  rows.querySelectorAll("[data-row]").forEach(removable);
  const add = document.querySelector(`[data-add-row="${rows.dataset.rows}"]`);
  if (add) {
    add.hidden = false;
    let next = rows.querySelectorAll("[data-row]").length + 100;
    add.addEventListener("click", () => {
      const template = rows.querySelector("[data-row]:last-of-type");
      const copy = emptied(template, next);
      next += 1;
      rows.appendChild(copy);
      removable(copy);
      const first = copy.querySelector("input, select");
      if (first) {
        first.focus();
      }
    });
  }
});
