// H0p dashboard behaviour. Everything works without it (plain forms and links); this adds
// copy buttons, confirmations, the UTM preview, rule/split rows and the preview card.
"use strict";
(function () {
  function copy(button) {
    var text = button.getAttribute("data-copy");
    var done = function () {
      var old = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = old; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () {});
    } else {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "visually-hidden";
      document.body.appendChild(area);
      area.select();
      try { document.execCommand("copy"); done(); } catch (e) { /* nothing to copy with */ }
      document.body.removeChild(area);
    }
  }

  document.addEventListener("click", function (event) {
    var target = event.target.closest("[data-copy],[data-add-row],[data-remove-row],[data-move-row]");
    if (!target) return;
    if (target.hasAttribute("data-copy")) { copy(target); return; }
    if (target.hasAttribute("data-add-row")) {
      var list = document.getElementById(target.getAttribute("data-add-row"));
      var template = document.getElementById(list.id + "-template");
      list.appendChild(template.content.cloneNode(true));
      renumber(list);
      var inputs = list.lastElementChild.querySelectorAll("input,select,textarea");
      if (inputs.length) inputs[0].focus();
      return;
    }
    var row = target.closest("[data-row]");
    var rows = row.parentElement;
    if (target.hasAttribute("data-remove-row")) {
      row.remove();
    } else if (target.getAttribute("data-move-row") === "up" && row.previousElementSibling) {
      rows.insertBefore(row, row.previousElementSibling);
    } else if (target.getAttribute("data-move-row") === "down" && row.nextElementSibling) {
      rows.insertBefore(row.nextElementSibling, row);
    }
    renumber(rows);
    target.focus();
  });

  // Field names carry the row's position (rules-0-url); ids and labels follow it.
  function renumber(list) {
    Array.prototype.forEach.call(list.children, function (row, i) {
      row.querySelectorAll("[name],[id],[for]").forEach(function (el) {
        ["name", "id", "for"].forEach(function (attr) {
          var v = el.getAttribute(attr);
          if (v) el.setAttribute(attr, v.replace(/-(\d+|N)-/, "-" + i + "-"));
        });
      });
      var n = row.querySelector("[data-row-number]");
      if (n) n.textContent = String(i + 1);
    });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var source = event.submitter && event.submitter.hasAttribute("data-confirm") ? event.submitter : form;
    var message = source.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });

  // UTM builder: the final URL, live.
  function utmPreview() {
    var out = document.getElementById("utm-final");
    if (!out) return;
    var url = document.getElementById("url").value.trim();
    var params = [];
    ["utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"].forEach(function (name) {
      var v = document.getElementById(name).value.trim();
      if (v) params.push(name + "=" + encodeURIComponent(v));
    });
    if (!url) { out.textContent = "—"; return; }
    out.textContent = params.length ? url + (url.indexOf("?") >= 0 ? "&" : "?") + params.join("&") : url;
  }

  function previewCard() {
    var title = document.getElementById("og_title");
    if (!title) return;
    document.getElementById("preview-title").textContent = title.value || document.getElementById("title").value || "No title";
    document.getElementById("preview-desc").textContent = document.getElementById("og_description").value;
  }

  function splitTotal() {
    var out = document.getElementById("split-total");
    if (!out) return;
    var total = 0;
    document.querySelectorAll("#split-rows input[type=number]").forEach(function (el) { total += Number(el.value) || 0; });
    out.textContent = total ? "Total: " + total + (total === 100 ? " ✓" : " (the weights must total 100)") : "";
  }

  document.addEventListener("input", function () { utmPreview(); previewCard(); splitTotal(); });
  document.addEventListener("DOMContentLoaded", function () { utmPreview(); splitTotal(); });

  // Select-all checkbox of the links table.
  document.addEventListener("change", function (event) {
    if (event.target.id === "select-all") {
      document.querySelectorAll("input[name=ids]").forEach(function (box) { box.checked = event.target.checked; });
    }
  });
})();
