// The page's Python: Pyodide in a dedicated module worker, started by docs/js/player.js
// (startPython) and kept for the whole visit. The build serves this file as
// _runtime/worker.js?v=<hash>; pages/framework/runtime.py makes what it loads.
//
// Messages from the page:
//   {type: "boot", config}            start Python (once); config is the page's runtime
//                                     manifest with absolute URLs (hook.py: runtime_files)
//   {type: "call", id, args}          pages/framework/worker.py: build(*args)
// Messages to the page:
//   {type: "ready", boot, ms, steps, why}
//                                     boot: "snapshot" (restored from the build's memory
//                                     snapshot) or "fresh" (Python started from python.zip,
//                                     or from the full standard library); why: the reason
//                                     there was no snapshot
//   {type: "failed", stage, error}    stage "snapshot": the snapshot did not restore (the
//                                     page starts a new worker without it); "boot": nothing did
//   {type: "answer", id, text} | {type: "answer", id, error}
//
// Every runtime file has a content hash in its URL (?v=...). The worker keeps them in Cache
// Storage under those URLs, so a later visit reads them from there whatever the static
// host's caching headers say; entries of older builds are dropped once Python is up.

const CACHE = "vsb-runtime";
const EMPTY_ZIP = "data:application/zip;base64,UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA==";
const started = performance.now();
const since = () => Math.round(performance.now() - started);
const steps = {}; // ms since the worker started: scripts, snapshot, python (for the benchmark)
let store = null; // Cache Storage, where available (secure contexts)
let build = null; // Python's pages.framework.worker.build
let pyodide = null;
let config = null;
let more = []; // zips to add, in order, when Python misses a module (see call)
const network = self.fetch.bind(self); // the real fetch (routeFetches replaces self.fetch)

async function openStore() {
  try {
    return self.caches ? await caches.open(CACHE) : null;
  } catch {
    return null; // e.g. storage blocked
  }
}

// A runtime file, from Cache Storage when it is there, else from the network (and then
// stored). Hashed URLs never change content, so a stored copy is always right. Each file is
// asked for once; every caller gets its own copy of the response.
const loading = new Map();
function get(url) {
  if (!loading.has(url)) loading.set(url, load(url));
  return loading.get(url).then((response) => response.clone());
}

async function load(url) {
  if (store) {
    const hit = await store.match(url).catch(() => null);
    if (hit) return hit;
  }
  const response = await network(url);
  if (!response.ok) throw new Error(`${new URL(url).pathname}: HTTP ${response.status}`);
  if (store) store.put(url, response.clone()).catch(() => {});
  return response;
}

async function gunzip(response) {
  const stream = response.body.pipeThrough(new DecompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

// Pyodide fetches pyodide.asm.wasm (by its plain URL under the index) and the standard
// library zip itself; this worker's own fetch answers them, and any other runtime file, from
// the hashed, stored copies.
function routeFetches(cfg) {
  const hashed = new Set([...Object.values(cfg.files), cfg.python, cfg.app].filter(Boolean));
  const wasm = cfg.pyodide + "pyodide.asm.wasm";
  self.fetch = (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input), self.location.href);
    if (url.href === wasm) return get(cfg.files["pyodide.asm.wasm"]);
    return hashed.has(url.href) ? get(url.href) : network(input, init);
  };
}

// pyodide.asm.mjs (1.2 MB): from the stored copy when there is one (a blob URL: a module
// import cannot read Cache Storage); else straight from its URL, which was measured faster
// than fetching and storing it first, and stored afterwards for the next visit.
async function asmModule(url) {
  const stored = store && (await store.match(url).catch(() => null));
  if (stored) {
    const local = URL.createObjectURL(new Blob([await stored.blob()], { type: "text/javascript" }));
    try {
      return (await import(local)).default;
    } catch {
      // fall through to the network import
    } finally {
      URL.revokeObjectURL(local);
    }
  }
  const module = await import(url);
  if (store && !stored) store.add(url).catch(() => {});
  return module.default;
}

async function boot(cfg) {
  config = cfg;
  store = await openStore();
  const files = cfg.files;
  routeFetches(cfg);
  const useSnapshot = Boolean(cfg.snapshot) && !cfg.noSnapshot;
  // Everything starts downloading at once; Pyodide waits for what it needs.
  get(files["pyodide.asm.wasm"]).catch(() => {});
  // The snapshot comes with the wasm's data segments XOR-ed out (snapshot_delta.mjs).
  const snapshot = useSnapshot ? Promise.all([
    get(cfg.snapshot).then(gunzip),
    get(files["pyodide.asm.wasm"]).then((r) => r.arrayBuffer()),
    import(cfg.delta),
  ]).then(([memory, wasm, { xorDataSegments }]) => {
    steps.snapshot = since();
    return xorDataSegments(memory, new Uint8Array(wasm));
  }) : undefined;
  snapshot?.catch(() => {});
  const [{ loadPyodide }, createPyodideModule] = await Promise.all([
    import(files["pyodide.mjs"]), asmModule(files["pyodide.asm.mjs"])]);
  steps.scripts = since();
  const options = {
    indexURL: cfg.pyodide,
    lockFileContents: cfg.lock,
    createPyodideModule,
    stdout: () => {},
    stderr: (line) => console.warn(`python: ${line}`),
  };
  if (useSnapshot) {
    try {
      // The snapshot's interpreter has imported everything it needs; its standard library
      // zip is an empty one until a module turns out to be missing (see call).
      pyodide = await loadPyodide({ ...options, stdLibURL: EMPTY_ZIP, _loadSnapshot: snapshot });
      build = pyodide.pyimport("pages.framework.worker").build;
      steps.python = since();
    } catch (err) {
      postMessage({ type: "failed", stage: "snapshot", error: String((err && err.message) || err) });
      return null;
    }
    more = [cfg.python, files["python_stdlib.zip"]].filter(Boolean);
    return { boot: "snapshot" };
  }
  // Afresh: python.zip (the standard library the site needs and the project, compiled), or
  // when the build could not make it, the full standard library and the sources.
  pyodide = await loadPyodide({ ...options, stdLibURL: cfg.python || files["python_stdlib.zip"] });
  if (cfg.python) more = [files["python_stdlib.zip"]];
  else await addZip(cfg.app, 0);
  build = pyodide.pyimport("pages.framework.worker").build;
  steps.python = since();
  return { boot: "fresh" };
}

let zips = 0;
async function addZip(url, position) {
  const path = `/lib/vsb-${zips++}.zip`;
  pyodide.FS.writeFile(path, new Uint8Array(await (await get(url)).arrayBuffer()));
  pyodide.runPython(`import sys, importlib; sys.path.insert(${position}, ${JSON.stringify(path)}); `
    + "importlib.invalidate_caches()");
}

// A module that the build did not see imported: add the next zip (python.zip, then the
// full standard library) at the end of sys.path and ask again.
async function call(args) {
  for (;;) {
    const text = build(...args);
    if (!more.length || !text.startsWith('{"errors":{"":"ModuleNotFoundError: ')) return text;
    console.warn(`vsb worker: ${text.slice(12, 120)}; adding ${new URL(more[0]).pathname}`);
    await addZip(more.shift(), 999);
  }
}

async function forgetOldBuilds() {
  if (!store) return;
  const current = new Set([...Object.values(config.files), config.worker, config.python,
    config.snapshot, config.app, config.delta].filter(Boolean));
  const runtime = new URL("./", config.worker).href;
  for (const request of await store.keys()) {
    if (request.url.startsWith(runtime) && !current.has(request.url)) await store.delete(request);
  }
}

let queue = Promise.resolve();
self.onmessage = ({ data }) => {
  if (data.type === "boot") {
    boot(data.config).then((result) => {
      if (!result) return;
      postMessage({ type: "ready", ...result, why: data.config.why || null, ms: since(), steps });
      forgetOldBuilds().catch(() => {});
    }, (err) => postMessage({ type: "failed", stage: "boot", error: String((err && err.message) || err) }));
  } else if (data.type === "call") {
    // One call at a time, in order: the simulation is synchronous anyway.
    queue = queue.then(async () => {
      try {
        postMessage({ type: "answer", id: data.id, text: await call(data.args) });
      } catch (err) {
        postMessage({ type: "answer", id: data.id, error: String((err && err.message) || err) });
      }
    });
  }
};
