// Builds the browser's Python at site-build time, in Node, with the vendored Pyodide itself.
// pages/framework/runtime.py writes the job, runs this and caches what it writes:
//
//   node runtime_build.mjs JOB.json
//
// JOB (paths are absolute): pyodide (the npm package's folder), build_py
// (pages/framework/pyodide_build.py), app_zip (the project's Python sources), stdlib_pyc (the
// whole standard library byte-compiled: read when present, else made here and written
// there), extra (test-only topic modules), exercise ([module, widget id, raw JSON] calls),
// check ([module, id, raw, CPython's answer]), lock (the lock file passed inline), out (a
// work folder), done (where out goes when everything worked: the cache's entry).
//
// 1. compiler: Pyodide from python_stdlib.zip (or stdlib_pyc) compiles the project's Python
//    (out/app-pyc.zip), and the standard library when stdlib_pyc is missing.
// 2. probe: a Pyodide on the compiled standard library (the compiler, unless it had to start
//    on the sources) answers every exercise call; the modules it imported on the way are
//    what the browser needs.
// 3. snapshot: another clean one imports exactly those modules, forgets its zips and takes
//    a memory snapshot (out/snapshot.bin.gz: the wasm's data segments XOR-ed out, gzipped;
//    see snapshot_delta.mjs).
// 4. out/python.zip: those standard-library modules and the project, compiled: what a
//    fresh start reads.
// 5. check: the snapshot restored beside an empty zip (as the browser restores it), and a
//    fresh start from python.zip, must answer every check call alike; the report lists
//    where they differ from CPython's answer.
// out/report.json says how far it got, with timings and sizes; when all went well, out is
// renamed to done (so a build that ran in the background is found by the next one).

import { existsSync, readFileSync, renameSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { xorDataSegments } from "./snapshot_delta.mjs";

const job = JSON.parse(readFileSync(process.argv[2], "utf8"));
const { loadPyodide } = await import(join(job.pyodide, "pyodide.mjs"));
const out = (name) => join(job.out, name);
const report = { ok: false, steps: {}, stage: "start" };
const save = () => writeFileSync(out("report.json"), JSON.stringify(report, null, 1));
const timed = async (name, fn) => {
  const t = performance.now();
  report.stage = name;
  const value = await fn();
  report.steps[name] = Math.round(performance.now() - t);
  return value;
};
// An empty zip: where the browser's restored interpreter finds no standard library until it
// asks for one (it has imported all it needs before the snapshot was taken).
const EMPTY_ZIP = Uint8Array.from([0x50, 0x4b, 5, 6, ...new Array(18).fill(0)]);
const q = (s) => JSON.stringify(s);

function boot(stdLibURL, extra = {}) {
  return loadPyodide({
    indexURL: job.pyodide, lockFileContents: job.lock, stdLibURL,
    stdout: () => {}, stderr: (s) => { report.stderr = (report.stderr || "") + s + "\n"; },
    ...extra,
  });
}

function put(py, path, bytes) {
  py.FS.mkdirTree(path.slice(0, path.lastIndexOf("/")));
  py.FS.writeFile(path, bytes);
}

function answersOf(py) {
  const build = py.pyimport("pages.framework.worker").build;
  const out = job.check.map(([module, id, raw]) => build(module, id, raw));
  build.destroy();
  return out;
}

try {
  const [major, minor] = job.lock.info.python.split(".");
  const stdlibZip = `/lib/python${major}${minor}.zip`;  // where Pyodide puts the standard library

  // 1. The compiler: the project's Python (and the standard library once per Pyodide).
  const haveStdlib = existsSync(job.stdlib_pyc);
  const compiler = await timed("compiler_boot", () => boot(haveStdlib ? job.stdlib_pyc : undefined));
  put(compiler, "/build/pyodide_build.py", readFileSync(job.build_py));
  put(compiler, "/build/app.zip", readFileSync(job.app_zip));
  compiler.runPython("import sys; sys.path.insert(0, '/build'); import pyodide_build");
  if (!haveStdlib) {
    report.stdlib_pyc = JSON.parse(await timed("compile_stdlib", () => compiler.runPython(
      `pyodide_build.compile_zip(${q(stdlibZip)}, "/build/stdlib.zip")`)));
    writeFileSync(job.stdlib_pyc + ".tmp", compiler.FS.readFile("/build/stdlib.zip"));
    renameSync(job.stdlib_pyc + ".tmp", job.stdlib_pyc);
  }
  report.app_pyc = JSON.parse(await timed("compile_app", () => compiler.runPython(
    'pyodide_build.compile_zip("/build/app.zip", "/build/app-pyc.zip")')));
  const appPyc = compiler.FS.readFile("/build/app-pyc.zip");
  put(compiler, "/build/stdlib-pyc.zip", readFileSync(job.stdlib_pyc));
  save();

  // 2. What the calls need: an interpreter on the compiled standard library (the compiler,
  //    when it started on it; its own imports are ones Pyodide's start-up makes anyway)
  //    answers every one of them.
  let probe = compiler;
  if (!haveStdlib) {
    probe = await timed("probe_boot", () => boot(job.stdlib_pyc));
    put(probe, "/build/pyodide_build.py", readFileSync(job.build_py));
    probe.runPython("import sys; sys.path.insert(0, '/build'); import pyodide_build");
  }
  put(probe, "/lib/app.zip", appPyc);
  probe.runPython("import sys; sys.path.insert(1, '/lib/app.zip')");
  const answers = JSON.parse(await timed("exercise", () => probe.runPython(
    `import pages.framework.registry as r; r.collect(${q(job.extra)}); `
    + `pyodide_build.exercise(${q(q(job.exercise))})`)));
  report.exercised = answers.length;
  const used = probe.runPython(`pyodide_build.stdlib_used(${q(stdlibZip)})`);
  const modules = probe.runPython(`pyodide_build.imported(${q(q([stdlibZip + "/", "/lib/app.zip/"]))})`);
  report.stdlib_entries = JSON.parse(used);
  report.modules = JSON.parse(modules).length;

  // 3. The snapshot: a fresh interpreter that imports those modules and nothing else.
  const snap = await timed("snapshot_boot", () => boot(job.stdlib_pyc, { _makeSnapshot: true }));
  put(snap, "/build/pyodide_build.py", readFileSync(job.build_py));
  put(snap, "/lib/app.zip", appPyc);
  snap.runPython("import sys; sys.path.insert(0, '/build'); import pyodide_build; sys.path.remove('/build'); "
    + "sys.path.insert(1, '/lib/app.zip')");
  await timed("import", () => snap.runPython(`pyodide_build.import_all(${q(modules)})`));
  snap.runPython("pyodide_build.forget_zips(); del sys.modules['pyodide_build']; del pyodide_build; import gc; gc.collect()");
  const memory = await timed("snapshot", () => snap.makeMemorySnapshot());
  report.snapshot_bytes = memory.length;
  const wasm = new Uint8Array(readFileSync(join(job.pyodide, "pyodide.asm.wasm")));
  const packed = await timed("gzip", () => gzipSync(xorDataSegments(memory, wasm), { level: 6 }));
  report.snapshot_gz_bytes = packed.length;
  writeFileSync(out("snapshot.bin.gz"), packed);
  save();

  // 4. python.zip: the standard library the calls took, and the project, compiled.
  report.python_zip = JSON.parse(await timed("python_zip", () => compiler.runPython(
    `pyodide_build.subset_zip("/build/stdlib-pyc.zip", ${q(used)}, "/build/app.zip", "/build/python.zip")`)));
  writeFileSync(out("python.zip"), compiler.FS.readFile("/build/python.zip"));
  writeFileSync(out("empty.zip"), EMPTY_ZIP);
  save();

  // 5. Both ways the browser starts must answer alike. Where Pyodide's answer differs from
  //    CPython's (the build's frames), the site has a determinism bug the browser tests name
  //    too; the report lists it, and the runtime is no less right for it.
  // Decoded from the file, as the worker decodes it.
  const decoded = xorDataSegments(new Uint8Array(gunzipSync(readFileSync(out("snapshot.bin.gz")))), wasm);
  const restored = await timed("restore", () => boot(out("empty.zip"), { _loadSnapshot: decoded }));
  const fromSnapshot = await timed("check_snapshot", () => answersOf(restored));
  const fresh = await timed("fresh_boot", () => boot(out("python.zip")));
  const fromZip = await timed("check_fresh", () => answersOf(fresh));
  job.check.forEach(([, id, raw], i) => {
    if (fromSnapshot[i] !== fromZip[i]) {
      throw new Error(`the snapshot and python.zip answer ${id} ${raw} differently`);
    }
  });
  report.checked = job.check.length;
  report.differs_from_cpython = job.check.filter((c, i) => fromZip[i] !== c[3]).map((c) => c[1]);
  report.ok = true;
  report.stage = "done";
} catch (err) {
  report.error = String((err && err.stack) || err);
}
report.finished = true;
save();
if (report.ok) {
  for (const name of ["job.json", "app.zip"]) if (existsSync(out(name))) unlinkSync(out(name));
  try {
    renameSync(job.out, job.done);
  } catch {
    rmSync(job.out, { recursive: true, force: true }); // another build made the same one
  }
}
process.exit(0);
