// H0p Analytics page: panels filled from /app/analytics/data (GET /analytics behind the session),
// the page's URL as its whole state (filters, range, unique, bots: shareable, back button works),
// a uPlot time series, a world map drawn from world-atlas TopoJSON, and live clicks over
// Server-Sent Events (/app/analytics/live). Also the live clicks table of a link's page.
"use strict";
(function () {
  var FILTERS = ["linkId", "domain", "tagId", "folderId", "country", "region", "city", "continent", "device",
    "browser", "os", "referer", "refererUrl", "utm_source", "utm_medium", "utm_campaign", "utm_term",
    "utm_content", "qr"];
  var RANGE = ["interval", "start", "end"];
  var LABELS = {
    linkId: "Link", domain: "Domain", tagId: "Tag", folderId: "Folder", country: "Country", region: "Region",
    city: "City", continent: "Continent", device: "Device", browser: "Browser", os: "OS", referer: "Referrer",
    refererUrl: "Referrer URL", utm_source: "UTM source", utm_medium: "UTM medium", utm_campaign: "UTM campaign",
    utm_term: "UTM term", utm_content: "UTM content", qr: "QR scans"
  };
  var CONTINENTS = { AF: "Africa", AN: "Antarctica", AS: "Asia", EU: "Europe", NA: "North America",
    OC: "Oceania", SA: "South America" };
  var TIME_ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  var regionNames = typeof Intl.DisplayNames === "function" ? new Intl.DisplayNames(["en"], { type: "region" }) : null;
  var numbers = new Intl.NumberFormat();

  function countryName(code) {
    if (!code) return "";
    try { return (regionNames && regionNames.of(code)) || code; } catch (e) { return code; }
  }

  // groupBy → the row's key, the filter a click on the row adds, the row's label, the column's heading
  var GROUPS = {
    countries: ["country", "country", function (r) { return countryName(r.country); }, "Country"],
    cities: ["city", "city", function (r) { return r.city + (r.country ? ", " + countryName(r.country) : ""); }, "City"],
    continents: ["continent", "continent", function (r) { return CONTINENTS[r.continent] || r.continent; }, "Continent"],
    devices: ["device", "device", null, "Device"],
    browsers: ["browser", "browser", null, "Browser"],
    os: ["os", "os", null, "OS"],
    referers: ["referer", "referer", null, "Referrer"],
    referer_urls: ["refererUrl", "refererUrl", null, "Referrer URL"],
    top_links: ["linkId", "linkId", function (r) { return r.slug ? r.domain + "/" + r.slug : r.linkId; }, "Link"],
    utm_sources: ["utm_source", "utm_source", null, "Source"],
    utm_mediums: ["utm_medium", "utm_medium", null, "Medium"],
    utm_campaigns: ["utm_campaign", "utm_campaign", null, "Campaign"],
    utm_terms: ["utm_term", "utm_term", null, "Term"],
    utm_contents: ["utm_content", "utm_content", null, "Content"]
  };

  // what a row without a value means: no referrer is a direct visit, no UTM value is no campaign
  var NONE = { referers: "(direct)", referer_urls: "(direct)", utm_sources: "(none)", utm_mediums: "(none)",
    utm_campaigns: "(none)", utm_terms: "(none)", utm_contents: "(none)" };

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  // --- the state: the page's URL ---------------------------------------------------------------

  function state() { return new URLSearchParams(window.location.search); }

  function filtersOf(params) {
    var out = new URLSearchParams();
    FILTERS.forEach(function (name) { if (params.get(name)) out.set(name, params.get(name)); });
    return out;
  }

  // The query of /analytics for the state: a custom range sends start/end, any other interval its name.
  function queryOf(params, extra) {
    var q = filtersOf(params);
    var interval = params.get("interval") || (params.get("start") ? "custom" : "24h");
    if (interval === "custom") {
      if (params.get("start")) q.set("start", params.get("start"));
      if (params.get("end")) q.set("end", params.get("end"));
    } else {
      q.set("interval", interval);
    }
    if (params.get("includeBots") === "true") q.set("includeBots", "true");
    q.set("timezone", TIME_ZONE);
    Object.keys(extra || {}).forEach(function (k) { q.set(k, extra[k]); });
    return q;
  }

  function liveQueryOf(params) {
    var q = filtersOf(params);
    if (params.get("includeBots") === "true") q.set("includeBots", "true");
    return q;
  }

  // --- data ------------------------------------------------------------------------------------

  function errorText(body, status) {
    var e = body && body.error;
    if (!e) return "The server answered " + status + ".";
    var details = (e.details || []).map(function (d) { return (d.path ? d.path + ": " : "") + d.message; });
    return e.message + (details.length ? " (" + details.join("; ") + ")" : "");
  }

  function getJSON(url, integrity) {
    var init = { headers: { accept: "application/json" }, credentials: "same-origin" };
    if (integrity) init.integrity = integrity;
    return fetch(url, init).then(function (r) {
      var type = r.headers.get("content-type") || "";
      if (type.indexOf("application/json") !== 0) {
        throw new Error("Your session has ended: reload the page to sign in again.");
      }
      return r.json().then(function (body) {
        if (!r.ok) throw new Error(errorText(body, r.status));
        return body;
      });
    });
  }

  // --- the Analytics page ----------------------------------------------------------------------

  var controls = document.getElementById("analytics-controls");
  var names = {}; // "filter=value" → what its chip shows (the page rendered some; rows teach the rest)
  var generation = 0;
  var chart = null;
  var world = null;

  function show(id, text) {
    var node = document.getElementById(id);
    if (node) node.textContent = text;
  }

  function fail(error) {
    var box = document.getElementById("analytics-error");
    box.textContent = error.message;
    box.hidden = false;
  }

  function navigate(params) {
    var search = params.toString();
    window.history.pushState(null, "", window.location.pathname + (search ? "?" + search : ""));
    refresh();
  }

  function addFilter(name, value) {
    var params = state();
    params.set(name, value);
    navigate(params);
  }

  function syncControls(params) {
    var interval = params.get("interval") || (params.get("start") ? "custom" : "24h");
    controls.elements.interval.value = interval;
    document.getElementById("custom-range").hidden = interval !== "custom";
    controls.elements.start.value = (params.get("start") || "").slice(0, 10);
    controls.elements.end.value = (params.get("end") || "").slice(0, 10);
    controls.querySelector('input[name=unique][value="' + (params.get("unique") === "true" ? "true" : "") + '"]').checked = true;
    controls.elements.includeBots.checked = params.get("includeBots") === "true";
    // the form's hidden filters follow the URL too (the Apply button without this script)
    controls.querySelectorAll("input[type=hidden]").forEach(function (node) { node.remove(); });
    filtersOf(params).forEach(function (value, name) {
      controls.insertBefore(el("input", { type: "hidden", name: name, value: value }), controls.firstChild);
    });
    document.getElementById("download-csv").setAttribute("href", "/app/analytics/export?" + queryOf(params).toString());
  }

  function fromControls() {
    var params = filtersOf(state());
    var interval = controls.elements.interval.value;
    document.getElementById("custom-range").hidden = interval !== "custom";
    params.set("interval", interval);
    if (interval === "custom") {
      if (!controls.elements.start.value) return null; // wait for a start date
      params.set("start", controls.elements.start.value);
      if (controls.elements.end.value) params.set("end", controls.elements.end.value);
    }
    if (controls.querySelector("input[name=unique]:checked").value === "true") params.set("unique", "true");
    if (controls.elements.includeBots.checked) params.set("includeBots", "true");
    return params;
  }

  function renderChips(params) {
    var list = document.getElementById("filter-chips");
    list.textContent = "";
    filtersOf(params).forEach(function (value, name) {
      var shown = names[name + "=" + value] || (name === "country" ? countryName(value) :
        name === "continent" ? (CONTINENTS[value] || value) : value);
      var chip = el("li", { class: "chip" });
      var text = el("span", {}, LABELS[name] + ": ");
      text.appendChild(el("b", {}, shown));
      chip.appendChild(text);
      var rest = state();
      rest.delete(name);
      chip.appendChild(el("a", { href: "/app/analytics?" + rest.toString(), "data-remove-filter": name,
        "aria-label": "Remove filter " + LABELS[name] + " " + shown }, "×"));
      list.appendChild(chip);
    });
  }

  function rankedTable(group, rows, unique) {
    var spec = GROUPS[group];
    var key = spec[0], filter = spec[1], label = spec[2], heading = spec[3];
    if (!rows.length) return el("p", { class: "hint nothing" }, "No clicks in this period.");
    var most = Math.max.apply(null, rows.map(function (r) { return r.clicks; })) || 1;
    var table = el("table", { class: "ranked-table", "data-group": group });
    table.appendChild(el("caption", { class: "visually-hidden" }, heading + " by clicks"));
    var head = el("tr");
    head.appendChild(el("th", { scope: "col" }, heading));
    head.appendChild(el("th", { scope: "col", class: "num" }, "Clicks"));
    if (unique) head.appendChild(el("th", { scope: "col", class: "num" }, "Visitors"));
    table.appendChild(el("thead")).appendChild(head);
    var body = table.appendChild(el("tbody"));
    rows.forEach(function (r) {
      var tr = el("tr");
      var cell = el("td", { class: "bar-cell" });
      cell.style.setProperty("--share", (100 * r.clicks / most).toFixed(1) + "%"); // CSSOM: the CSP allows it
      var value = r[key];
      if (value === null || value === undefined || value === "") {
        cell.appendChild(el("span", { class: "unknown" }, NONE[group] || "(unknown)"));
      } else {
        var shown = label ? label(r) : String(value);
        names[filter + "=" + value] = shown;
        cell.appendChild(el("button", { type: "button", class: "row-filter", "data-filter": filter, "data-value": value,
          title: "Show only " + shown }, shown));
      }
      tr.appendChild(cell);
      tr.appendChild(el("td", { class: "num" }, numbers.format(r.clicks)));
      if (unique) tr.appendChild(el("td", { class: "num" }, numbers.format(r.visitors || 0)));
      body.appendChild(tr);
    });
    var wrap = el("div", { class: "ranked-wrap" });
    wrap.appendChild(table);
    return wrap;
  }

  function selectedGroup(panel) {
    return panel.querySelector('[role=tab][aria-selected="true"]').getAttribute("data-group");
  }

  function loadPanel(panel, params, mine) {
    var group = selectedGroup(panel);
    var target = panel.querySelector("[role=tabpanel]");
    var unique = params.get("unique") === "true";
    target.setAttribute("aria-busy", "true");
    var extra = { groupBy: group, limit: "100" };
    if (unique) extra.unique = "true";
    return getJSON("/app/analytics/data?" + queryOf(params, extra).toString()).then(function (rows) {
      if (mine !== generation) return;
      target.textContent = "";
      target.appendChild(rankedTable(group, rows, unique));
      target.setAttribute("aria-busy", "false");
      if (group === "countries") drawMap(rows);
    });
  }

  function refresh() {
    var params = state();
    var mine = ++generation;
    var unique = params.get("unique") === "true";
    document.body.removeAttribute("data-analytics-ready");
    document.getElementById("analytics-error").hidden = true;
    syncControls(params);
    renderChips(params);
    document.getElementById("visitors-stat").hidden = !unique;
    var extra = unique ? { unique: "true" } : {};
    var jobs = [
      getJSON("/app/analytics/data?" + queryOf(params, Object.assign({ groupBy: "count" }, extra)).toString())
        .then(function (total) {
          if (mine !== generation) return;
          show("total-clicks", numbers.format(total.clicks));
          if (unique) show("total-visitors", numbers.format(total.visitors || 0));
        }),
      getJSON("/app/analytics/data?" + queryOf(params, Object.assign({ groupBy: "timeseries" }, extra)).toString())
        .then(function (points) { if (mine === generation) drawChart(points, unique); })
    ];
    document.querySelectorAll("[data-panel]").forEach(function (panel) { jobs.push(loadPanel(panel, params, mine)); });
    Promise.all(jobs).then(function () {
      if (mine === generation) document.body.setAttribute("data-analytics-ready", String(mine));
    }, fail);
    live.follow(liveQueryOf(params));
  }

  // --- clicks over time (uPlot) ----------------------------------------------------------------

  function drawChart(points, unique) {
    var box = document.getElementById("timeseries-chart");
    var xs = points.map(function (p) { return Date.parse(p.start) / 1000; });
    var data = [xs, points.map(function (p) { return p.clicks; })];
    var fg = cssVar("--fg"), line = cssVar("--line"), accent = cssVar("--accent"), second = cssVar("--accent-2");
    var bars = points.length <= 62 && uPlot.paths && uPlot.paths.bars;
    var series = [{}, { label: "Clicks", stroke: accent, fill: cssVar("--accent-fill"), width: 2,
      paths: bars ? uPlot.paths.bars({ size: [0.7, 48] }) : undefined, points: { show: false } }];
    if (unique) {
      data.push(points.map(function (p) { return p.visitors || 0; }));
      series.push({ label: "Unique visitors", stroke: second, width: 2, points: { show: false } });
    }
    var axis = { stroke: fg, grid: { stroke: line, width: 1 }, ticks: { stroke: line, width: 1 } };
    var step = xs.length > 1 ? xs[1] - xs[0] : 3600; // half a bucket each side: the end bars show whole
    var options = {
      width: Math.max(280, box.clientWidth), height: 240, series: series,
      scales: {
        x: { time: true, range: function (u, min, max) { return [min - step / 2, max + step / 2]; } },
        y: { range: function (u, min, max) { return [0, Math.max(4, max * 1.1)]; } }
      },
      axes: [axis, Object.assign({ size: 50 }, axis)], legend: { show: true }, cursor: { drag: { x: false } }
    };
    if (chart) chart.destroy();
    box.textContent = "";
    chart = new uPlot(options, data, box);
    var total = data[1].reduce(function (a, b) { return a + b; }, 0);
    box.setAttribute("aria-label", "Clicks over time: " + numbers.format(total) + " clicks in " + points.length +
      " intervals");
    show("timeseries-note", points.length ? "Times in " + TIME_ZONE + "." : "");
  }

  window.addEventListener("resize", function () {
    var box = document.getElementById("timeseries-chart");
    if (chart && box) chart.setSize({ width: Math.max(280, box.clientWidth), height: 240 });
  });

  // --- the world map (world-atlas TopoJSON, an equirectangular projection drawn as SVG) ----------

  var W = 960, H = 420, TOP = 84, BOTTOM = -58; // Antarctica left out: nobody clicks from there

  function project(point) {
    return ((point[0] + 180) / 360 * W).toFixed(1) + "," + ((TOP - point[1]) / (TOP - BOTTOM) * H).toFixed(1);
  }

  function pathOf(geometry) {
    var polygons = geometry.type === "Polygon" ? [geometry.coordinates] :
      geometry.type === "MultiPolygon" ? geometry.coordinates : [];
    return polygons.map(function (rings) {
      return rings.map(function (ring) {
        // a ring across the antimeridian (Chukotka, Fiji) is drawn whole past the right edge, not as a band
        var wraps = ring.some(function (p, i) { return i > 0 && Math.abs(p[0] - ring[i - 1][0]) > 180; });
        var points = wraps ? ring.map(function (p) { return p[0] < 0 ? [p[0] + 360, p[1]] : p; }) : ring;
        return "M" + points.map(project).join("L") + "Z";
      }).join("");
    }).join("");
  }

  function loadWorld() {
    if (!world) {
      world = Promise.all([getJSON("/app/static/vendor/countries-110m.json",
        document.getElementById("world-map").getAttribute("data-atlas-integrity")), getJSON("/app/static/countries.json")])
        .then(function (answers) {
          var topology = answers[0], numeric = answers[1].numeric;
          var svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
          svg.setAttribute("viewBox", "0 0 " + W + " " + H);
          svg.setAttribute("aria-hidden", "true");
          var byId = {};
          topojson.feature(topology, topology.objects.countries).features.forEach(function (f) {
            if (!f.geometry) return;
            var path = document.createElementNS("http://www.w3.org/2000/svg", "path");
            path.setAttribute("d", pathOf(f.geometry));
            path.setAttribute("class", "land");
            path.appendChild(document.createElementNS("http://www.w3.org/2000/svg", "title"));
            svg.appendChild(path);
            if (f.id) byId[f.id] = { path: path, name: f.properties.name };
          });
          var box = document.getElementById("world-map");
          box.textContent = "";
          box.appendChild(svg);
          var alpha2 = {};
          Object.keys(numeric).forEach(function (a2) { if (byId[numeric[a2]]) byId[numeric[a2]].code = a2; alpha2[a2] = numeric[a2]; });
          return { byId: byId, numeric: alpha2 };
        });
    }
    return world;
  }

  function drawMap(rows) {
    loadWorld().then(function (map) {
      var clicks = {};
      rows.forEach(function (r) { if (r.country) clicks[map.numeric[r.country]] = r.clicks; });
      var most = Math.max.apply(null, [1].concat(rows.map(function (r) { return r.clicks; })));
      Object.keys(map.byId).forEach(function (id) {
        var c = map.byId[id], n = clicks[id] || 0;
        // five shades on a square-root scale: one big country does not wash out the rest
        var shade = n ? Math.min(5, 1 + Math.floor(4 * Math.sqrt(n / most))) : 0;
        c.path.setAttribute("class", "land" + (shade ? " shade" + shade : ""));
        c.path.firstChild.textContent = countryName(c.code) + ": " + numbers.format(n) + " clicks";
        if (n && c.code) c.path.setAttribute("data-country", c.code); else c.path.removeAttribute("data-country");
      });
    }, fail);
  }

  // --- live clicks -------------------------------------------------------------------------------

  var live = {
    source: null, query: null, retry: null, count: 0, onClicks: null,
    follow: function (query) {
      var text = query.toString();
      if (this.source && this.query === text) return;
      this.stop();
      this.query = text;
      var self = this;
      var source = new EventSource("/app/analytics/live" + (text ? "?" + text : ""));
      this.source = source;
      source.addEventListener("open", function () { status("Live", "on"); });
      source.addEventListener("clicks", function (event) { self.receive(JSON.parse(event.data)); });
      source.addEventListener("error", function () {
        if (source.readyState === EventSource.CLOSED) { // refused (too many streams, signed out): try later
          status("Live updates paused; retrying", "off");
          self.source = null;
          self.retry = setTimeout(function () { self.follow(new URLSearchParams(self.query)); }, 10000);
        } else {
          status("Reconnecting…", "off");
        }
      });
    },
    stop: function () {
      if (this.source) this.source.close();
      if (this.retry) clearTimeout(this.retry);
      this.source = null;
      this.retry = null;
    },
    receive: function (clicks) {
      var table = document.getElementById("live-clicks");
      var body = table.tBodies[0];
      var waiting = body.querySelector(".waiting");
      if (waiting) waiting.remove();
      clicks.forEach(function (c) {
        var tr = el("tr", { class: "fresh" });
        var time = new Date(c.timestamp);
        tr.appendChild(el("td", {}, time.toLocaleTimeString()));
        tr.appendChild(el("td", {}, c.domain + "/" + c.slug));
        tr.appendChild(el("td", {}, c.country ? countryName(c.country) : "—"));
        tr.appendChild(el("td", {}, c.device || "—"));
        tr.appendChild(el("td", {}, c.browser || "—"));
        tr.appendChild(el("td", { class: "opt" }, c.referer || "—"));
        body.insertBefore(tr, body.firstChild);
      });
      while (body.rows.length > 50) body.deleteRow(body.rows.length - 1);
      this.count += clicks.length;
      show("live-count", numbers.format(this.count));
      if (this.onClicks) this.onClicks(clicks);
    }
  };

  function status(text, state) {
    var node = document.getElementById("live-status");
    if (!node) return;
    node.hidden = false;
    node.textContent = text;
    node.setAttribute("data-state", state);
  }

  // A link's page: only its live clicks (the table says which link it follows).
  var linkLive = document.querySelector("[data-live-link]");
  if (linkLive) {
    live.onClicks = function (clicks) {
      var total = document.getElementById("link-clicks");
      if (total) total.textContent = String(Number(total.textContent.replace(/\D/g, "")) + clicks.length);
    };
    live.follow(new URLSearchParams({ linkId: linkLive.getAttribute("data-live-link") }));
  }

  if (!controls) return;

  // The panels follow stored clicks: a live batch redraws them when the range runs up to now, a
  // second later (what else arrives comes along) and at most every 5 s (a busy workspace would
  // otherwise query without pause).
  var pending = null, lastRedraw = 0;
  live.onClicks = function () {
    var params = state();
    if ((params.get("interval") || (params.get("start") ? "custom" : "24h")) === "custom") return;
    if (pending) return;
    var wait = Math.max(1000, lastRedraw + 5000 - Date.now());
    pending = setTimeout(function () { pending = null; lastRedraw = Date.now(); refresh(); }, wait);
  };

  // the names the page rendered for its scope chips (a link's short URL, a tag's name)
  document.querySelectorAll("[data-remove-filter]").forEach(function (a) {
    var name = a.getAttribute("data-remove-filter");
    if (["linkId", "tagId", "folderId"].indexOf(name) < 0) return;
    names[name + "=" + state().get(name)] = a.previousElementSibling.querySelector("b").textContent;
  });

  document.addEventListener("click", function (event) {
    var target = event.target.closest("[data-filter],[data-remove-filter],[role=tab],path[data-country]");
    if (!target) return;
    if (target.matches("path")) { addFilter("country", target.getAttribute("data-country")); return; }
    if (target.hasAttribute("data-filter")) {
      addFilter(target.getAttribute("data-filter"), target.getAttribute("data-value"));
      return;
    }
    if (target.hasAttribute("data-remove-filter")) {
      event.preventDefault();
      var params = state();
      params.delete(target.getAttribute("data-remove-filter"));
      navigate(params);
      return;
    }
    var panel = target.closest("[data-panel]");
    panel.querySelectorAll("[role=tab]").forEach(function (tab) {
      tab.setAttribute("aria-selected", tab === target ? "true" : "false");
      tab.tabIndex = tab === target ? 0 : -1;
    });
    panel.querySelector("[role=tabpanel]").setAttribute("aria-labelledby", target.id);
    var map = panel.querySelector("#world-map");
    if (map) map.hidden = selectedGroup(panel) !== "countries";
    loadPanel(panel, state(), generation).catch(fail);
  });

  // tabs: arrow keys move between a panel's tabs
  document.addEventListener("keydown", function (event) {
    var tab = event.target.closest && event.target.closest("[role=tab]");
    if (!tab || (event.key !== "ArrowRight" && event.key !== "ArrowLeft")) return;
    var tabs = Array.prototype.slice.call(tab.parentElement.querySelectorAll("[role=tab]"));
    var next = tabs[(tabs.indexOf(tab) + (event.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
    next.focus();
    next.click();
  });

  controls.addEventListener("change", function () {
    var params = fromControls();
    if (params) navigate(params);
  });
  controls.addEventListener("submit", function (event) {
    event.preventDefault();
    var params = fromControls();
    if (params) navigate(params);
  });
  window.addEventListener("popstate", refresh);

  document.querySelectorAll("[data-panel]").forEach(function (panel, i) {
    panel.querySelectorAll("[role=tab]").forEach(function (tab, j) {
      tab.id = "tab-" + i + "-" + j;
      tab.tabIndex = tab.getAttribute("aria-selected") === "true" ? 0 : -1;
      tab.setAttribute("aria-controls", "tabpanel-" + i);
    });
    var target = panel.querySelector("[role=tabpanel]");
    target.id = "tabpanel-" + i;
    target.setAttribute("aria-labelledby", panel.querySelector('[role=tab][aria-selected="true"]').id);
  });
  refresh();
})();
