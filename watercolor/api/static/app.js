// Watercolor's web page: choose images, start a job, watch it, compare and download the results.
// Plain browser JavaScript, no build step; it uses the same public API as any client.
"use strict";

(() => {
  const POLL_MS = 600;
  const FINISHED = new Set(["done", "failed", "cancelled"]);
  const $ = (selector) => document.querySelector(selector);

  const state = {
    files: [], // File objects, in the order they are sent
    previews: [], // object URLs of the files, for thumbnails and the "before" side
    models: new Map(),
    job: null,
    jobFiles: [], // the files of the running job (the choice may change meanwhile)
    jobPreviews: [],
    cards: [],
    timer: null,
    fetched: new Set(), // result indexes already fetched for the current job
  };

  // --- talking to the API ----------------------------------------------------------------------

  function authHeaders() {
    const key = $("#api_key").value.trim();
    return key ? { "X-API-Key": key } : {};
  }

  async function api(path, options = {}) {
    const response = await fetch(path, {
      ...options,
      headers: { Accept: "application/json", ...authHeaders(), ...(options.headers || {}) },
    });
    const type = response.headers.get("Content-Type") || "";
    const body = type.includes("json") ? await response.json() : null;
    if (response.status === 401) {
      $("#key-field").hidden = false;
    }
    if (!response.ok) {
      const error = new Error(body && body.error ? body.error.message : `HTTP ${response.status}`);
      error.status = response.status;
      error.body = body;
      throw error;
    }
    return { body, response };
  }

  async function fetchBlob(url) {
    const response = await fetch(url, { headers: authHeaders() });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const disposition = response.headers.get("Content-Disposition") || "";
    const match = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition);
    return { blob: await response.blob(), name: match ? decodeURIComponent(match[1]) : null };
  }

  function say(text, isError = false) {
    const message = $("#message");
    message.textContent = text;
    message.classList.toggle("error", isError);
  }

  // --- models and settings -------------------------------------------------------------------

  async function loadModels() {
    try {
      const { body } = await api("v1/models");
      const select = $("#model");
      select.replaceChildren();
      for (const model of body.models) {
        state.models.set(model.name, model);
        const option = document.createElement("option");
        option.value = model.name;
        const scales = model.native_scales.length ? model.native_scales.map((s) => `${s}x`).join("/") : "any";
        option.textContent = `${model.name} (${scales})`;
        select.append(option);
      }
      select.value = body.default;
      modelChanged();
      updateStart();
    } catch (error) {
      say(error.status === 401 ? "Enter the API key, then reload the page." : `Cannot load models: ${error.message}`, true);
    }
  }

  function modelChanged() {
    const model = state.models.get($("#model").value);
    if (!model) return;
    $("#model-about").textContent = `Best for ${model.best_for}. Speed on a CPU: ${model.cpu_speed} of input.`;
    const scales = model.native_scales;
    const list = $("#scale-choices");
    list.replaceChildren(...(scales.length ? scales : [1.5, 2, 3, 4]).map((s) => {
      const option = document.createElement("option");
      option.value = String(s);
      return option;
    }));
    $("#scale").value = String(scales.length ? scales[scales.length - 1] : 2);
    $("#scale-about").textContent = scales.length
      ? `Native: ${scales.map((s) => `${s}x`).join(", ")}; other scales are resampled from the nearest.`
      : "Any scale.";
    const options = $("#options");
    options.replaceChildren();
    for (const [name, spec] of Object.entries(model.options || {})) {
      const field = document.createElement("div");
      field.className = "field";
      const label = document.createElement("label");
      label.htmlFor = `option-${name}`;
      label.textContent = name[0].toUpperCase() + name.slice(1);
      const select = document.createElement("select");
      select.id = `option-${name}`;
      select.dataset.option = name;
      for (const choice of spec.choices) {
        const option = document.createElement("option");
        option.value = String(choice);
        option.textContent = String(choice);
        option.selected = choice === spec.default;
        select.append(option);
      }
      const about = document.createElement("p");
      about.className = "about";
      about.id = `option-${name}-about`;
      about.textContent = spec.description;
      select.setAttribute("aria-describedby", about.id);
      field.append(label, select, about);
      options.append(field);
    }
  }

  function formatChanged() {
    const format = $("#format").value;
    $("#quality-field").hidden = !(format === "jpeg" || format === "webp");
  }

  // --- choosing files ------------------------------------------------------------------------

  function addFiles(fileList) {
    const images = [...fileList].filter((f) => f.type.startsWith("image/") || f.type === "");
    for (const file of images) {
      state.files.push(file);
      state.previews.push(URL.createObjectURL(file));
    }
    if (images.length < fileList.length) say("Only image files can be upscaled; others were left out.", true);
    else say("");
    renderChosen();
  }

  function removeFile(index) {
    state.files.splice(index, 1);
    state.previews.splice(index, 1); // still used by a running job's cards, so not revoked
    renderChosen();
  }

  function renderChosen() {
    const list = $("#chosen");
    list.replaceChildren(...state.files.map((file, index) => {
      const item = document.createElement("li");
      const thumb = document.createElement("img");
      thumb.src = state.previews[index];
      thumb.alt = "";
      const name = document.createElement("span");
      name.className = "chosen-name";
      name.textContent = file.name;
      const size = document.createElement("span");
      size.className = "chosen-size";
      size.textContent = bytes(file.size);
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "link";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", `Remove ${file.name}`);
      remove.addEventListener("click", () => removeFile(index));
      item.append(thumb, name, size, remove);
      return item;
    }));
    updateStart();
  }

  function updateStart() {
    const busy = state.job && !FINISHED.has(state.job.state);
    $("#start").disabled = !state.files.length || !state.models.size || Boolean(busy);
  }

  // --- starting and watching a job -----------------------------------------------------------

  async function start(event) {
    event.preventDefault();
    if (!state.files.length) return;
    const form = new FormData();
    for (const file of state.files) form.append("image", file, file.name);
    const fields = { model: $("#model").value, scale: $("#scale").value.trim(), format: $("#format").value };
    if (!$("#quality-field").hidden) fields.quality = $("#quality").value.trim();
    const tile = $("#tile_size").value.trim();
    if (tile) fields.tile_size = tile;
    for (const select of document.querySelectorAll("#options select")) fields[select.dataset.option] = select.value;
    for (const [name, value] of Object.entries(fields)) if (value !== "") form.append(name, value);

    $("#start").disabled = true;
    say("Uploading…");
    try {
      const { body } = await api("v1/jobs", { method: "POST", body: form });
      say("");
      follow(body, [...state.files], [...state.previews]);
    } catch (error) {
      const details = error.body && error.body.errors
        ? ` (${error.body.errors.map((e) => `image ${e.index + 1}: ${e.message}`).join("; ")})` : "";
      say(`Could not start: ${error.message}${details}`, true);
      updateStart();
    }
  }

  function follow(job, files, previews) {
    clearTimeout(state.timer);
    state.job = job;
    state.jobFiles = files;
    state.jobPreviews = previews;
    state.fetched = new Set();
    state.cards = [];
    $("#results").replaceChildren();
    $("#job").hidden = false;
    render(job);
    $("#job").scrollIntoView({ behavior: "smooth", block: "start" });
    schedulePoll();
  }

  function schedulePoll() {
    if (!state.job || FINISHED.has(state.job.state)) return;
    state.timer = setTimeout(poll, POLL_MS);
  }

  async function poll() {
    const id = state.job.id;
    try {
      const { body } = await api(`v1/jobs/${id}`);
      if (state.job && state.job.id === id) {
        state.job = body;
        render(body);
      }
    } catch (error) {
      $("#overall-text").textContent = `Cannot read the job: ${error.message}`;
      if (error.status === 404) return;
    }
    schedulePoll();
  }

  async function cancel() {
    if (!state.job) return;
    $("#cancel").disabled = true;
    try {
      const { body } = await api(`v1/jobs/${state.job.id}/cancel`, { method: "POST" });
      if (body) {
        state.job = body;
        render(body);
      }
    } catch (error) {
      $("#overall-text").textContent = `Cannot cancel: ${error.message}`;
      $("#cancel").disabled = false;
    }
  }

  // --- showing a job -------------------------------------------------------------------------

  function render(job) {
    const percent = Math.round(job.progress * 100);
    const overall = $("#overall");
    overall.value = percent;
    overall.setAttribute("aria-valuetext", `${percent} percent, ${job.state}`);
    const c = job.counts;
    const parts = [`${percent} %`, `${c.done} of ${c.images} done`];
    if (c.failed) parts.push(`${c.failed} failed`);
    if (c.cancelled) parts.push(`${c.cancelled} cancelled`);
    if (job.state === "queued") parts.push("waiting for a free backend");
    if (job.eta_seconds !== null && job.state === "running") parts.push(`about ${duration(job.eta_seconds)} left`);
    if (FINISHED.has(job.state)) parts.push(job.state === "done" ? "finished" : job.state);
    $("#overall-text").textContent = parts.join(" · ");
    $("#job").dataset.state = job.state;

    const finished = FINISHED.has(job.state);
    $("#cancel").hidden = finished;
    $("#cancel").disabled = false;
    $("#zip").hidden = !job.results_zip;
    job.images.forEach((image) => renderImage(job, image));
    updateStart();
  }

  function renderImage(job, image) {
    let card = state.cards[image.index];
    if (!card) {
      card = makeCard(image);
      state.cards[image.index] = card;
      $("#results").append(card.root);
    }
    card.root.dataset.state = image.state;
    card.state.textContent = image.state;
    const percent = Math.round(image.progress * 100);
    card.progress.value = percent;
    card.progress.setAttribute("aria-valuetext", `${percent} percent, ${image.state}`);
    const tiles = image.tiles.total ? `${image.tiles.done} of ${image.tiles.total} tiles` : "";
    let detail = "";
    if (image.state === "running") detail = tiles ? `${percent} % · ${tiles}` : "sent, waiting for a backend";
    else if (image.state === "queued") detail = "queued";
    else if (image.seconds !== null && image.seconds !== undefined) detail = `took ${duration(image.seconds)}`;
    card.detail.textContent = detail;
    if (image.error) {
      card.error.hidden = false;
      card.error.textContent = `${image.error.code}: ${image.error.message}`;
    }
    if (image.result && !state.fetched.has(image.index)) {
      state.fetched.add(image.index);
      showResult(card, image).catch((error) => {
        card.error.hidden = false;
        card.error.textContent = `Cannot fetch the result: ${error.message}`;
      });
    }
  }

  function makeCard(image) {
    const root = document.createElement("li");
    root.className = "card";
    const head = document.createElement("div");
    head.className = "card-head";
    const name = document.createElement("span");
    name.className = "card-name";
    const label = image.name || `image ${image.index + 1}`;
    name.textContent = label;
    const stateText = document.createElement("span");
    stateText.className = "card-state";
    head.append(name, stateText);
    const progress = document.createElement("progress");
    progress.max = 100;
    progress.value = 0;
    progress.setAttribute("aria-label", `Progress of ${label}`);
    const detail = document.createElement("p");
    detail.className = "card-detail";
    const error = document.createElement("p");
    error.className = "card-error";
    error.setAttribute("role", "alert");
    error.hidden = true;
    const body = document.createElement("div");
    body.className = "card-body";
    root.append(head, progress, detail, error, body);
    return { root, state: stateText, progress, detail, error, body, label };
  }

  async function showResult(card, image) {
    const { blob, name } = await fetchBlob(image.result.url);
    const afterUrl = URL.createObjectURL(blob);
    const beforeUrl = state.jobPreviews[image.index];
    const compare = document.createElement("div");
    compare.className = "compare";
    compare.style.setProperty("--ratio", String(image.result.width / image.result.height));
    const after = document.createElement("img");
    after.className = "after";
    after.src = afterUrl;
    after.alt = `After: ${card.label}, ${image.result.width} × ${image.result.height} pixels`;
    compare.append(after);
    if (beforeUrl) {
      const before = document.createElement("img");
      before.className = "before";
      before.src = beforeUrl;
      before.alt = `Before: ${card.label}, as uploaded`;
      const line = document.createElement("span");
      line.className = "divider";
      line.setAttribute("aria-hidden", "true");
      const tagBefore = tag("Before", "tag-before");
      const tagAfter = tag("After", "tag-after");
      const slider = document.createElement("input");
      slider.type = "range";
      slider.min = "0";
      slider.max = "100";
      slider.value = "50";
      slider.className = "slider";
      slider.setAttribute("aria-label", `Compare before and after for ${card.label}: share of the original shown`);
      const place = () => compare.style.setProperty("--split", `${slider.value}%`);
      slider.addEventListener("input", place);
      place();
      compare.append(before, line, tagBefore, tagAfter, slider);
    }
    const link = document.createElement("a");
    link.className = "button download";
    link.href = afterUrl;
    link.download = name || `${card.label}-upscaled`;
    link.textContent = `Download ${image.result.width} × ${image.result.height} (${bytes(image.result.bytes)})`;
    link.setAttribute("aria-label", `Download the result of ${card.label}`);
    card.body.replaceChildren(compare, link);
  }

  function tag(text, className) {
    const span = document.createElement("span");
    span.className = `tag ${className}`;
    span.textContent = text;
    span.setAttribute("aria-hidden", "true");
    return span;
  }

  async function downloadZip() {
    if (!state.job || !state.job.results_zip) return;
    const button = $("#zip");
    button.disabled = true;
    try {
      const { blob, name } = await fetchBlob(state.job.results_zip);
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = name || "watercolor.zip";
      document.body.append(link);
      link.click();
      link.remove();
    } catch (error) {
      $("#overall-text").textContent = `Cannot download the zip: ${error.message}`;
    } finally {
      button.disabled = false;
    }
  }

  // --- small helpers -------------------------------------------------------------------------

  function bytes(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
    return `${(n / 1024 / 1024).toFixed(1)} MB`;
  }

  function duration(seconds) {
    const s = Math.max(1, Math.round(seconds));
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    return m < 60 ? `${m} min ${s % 60} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
  }

  // --- wiring --------------------------------------------------------------------------------

  function setUp() {
    $("#files").addEventListener("change", (event) => {
      addFiles(event.target.files);
      event.target.value = "";
    });
    const drop = $("#drop");
    for (const name of ["dragenter", "dragover"]) {
      drop.addEventListener(name, (event) => {
        event.preventDefault();
        drop.classList.add("over");
      });
    }
    for (const name of ["dragleave", "drop"]) {
      drop.addEventListener(name, () => drop.classList.remove("over"));
    }
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      addFiles(event.dataTransfer.files);
    });
    $("#model").addEventListener("change", modelChanged);
    $("#format").addEventListener("change", formatChanged);
    $("#upload").addEventListener("submit", start);
    $("#cancel").addEventListener("click", cancel);
    $("#zip").addEventListener("click", downloadZip);
    $("#api_key").addEventListener("change", () => {
      sessionStorage.setItem("watercolor-key", $("#api_key").value);
      if (!state.models.size) loadModels();
    });
    const key = sessionStorage.getItem("watercolor-key");
    if (key) {
      $("#api_key").value = key;
      $("#key-field").hidden = false;
    }
    formatChanged();
    loadModels();
  }

  setUp();
})();
