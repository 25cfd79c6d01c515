// A memory snapshot of Pyodide, made smaller to send: its memory begins as pyodide.asm.wasm's
// data segments (3 MB of it), and most of that is still there when the snapshot is taken.
// XOR-ing each segment into the snapshot zeroes those bytes, so gzip makes the file about a
// quarter smaller; XOR-ing them again gives the snapshot back. runtime_build.mjs encodes
// with it at build time and worker.js decodes with it in the browser (served as
// _runtime/snapshot_delta.mjs?v=<hash>); the build checks that the round trip restores.
//
// A snapshot (Pyodide's API.makeSnapshot) is a header, whose second 32-bit word is its
// length, then the whole memory; the memory's address 0 is the byte after the header.

// LEB128 numbers; every one in a data section's headers fits in 32 bits.
function leb(bytes, at) {
  let value = 0;
  for (let shift = 0; ; shift += 7) {
    const b = bytes[at++];
    value |= (b & 0x7f) << shift;
    if (!(b & 0x80)) return [value >>> 0, at];
  }
}

function sleb(bytes, at) {
  let value = 0;
  for (let shift = 0; ; shift += 7) {
    const b = bytes[at++];
    value |= (b & 0x7f) << shift;
    if (!(b & 0x80)) return [shift < 25 && b & 0x40 ? value | (-1 << (shift + 7)) : value, at];
  }
}

// [address, start, end] of every active data segment of memory 0 with a constant address:
// the wasm's bytes [start, end) are what the memory holds at `address` before it runs.
export function dataSegments(wasm) {
  const out = [];
  let at = 8; // magic and version
  while (at < wasm.length) {
    const id = wasm[at];
    const [size, body] = leb(wasm, at + 1);
    at = body + size;
    if (id !== 11) continue; // the data section
    let [count, p] = leb(wasm, body);
    for (; count > 0; count--) {
      let flags;
      [flags, p] = leb(wasm, p);
      let address = null;
      if (flags === 0 || flags === 2) {
        let memory = 0;
        if (flags === 2) [memory, p] = leb(wasm, p);
        const op = wasm[p++];
        if (op === 0x41) [address, p] = sleb(wasm, p); // i32.const
        else if (op === 0x23) [, p] = leb(wasm, p); // global.get: not known here
        else throw new Error(`data segment offset opcode ${op}`);
        if (wasm[p++] !== 0x0b) throw new Error("data segment offset is not one instruction");
        if (memory !== 0) address = null;
      }
      let length;
      [length, p] = leb(wasm, p);
      if (address !== null) out.push([address, p, p + length]);
      p += length;
    }
  }
  return out;
}

// XOR the wasm's data segments into the snapshot's memory, in place; the same call undoes it.
export function xorDataSegments(snapshot, wasm) {
  const header = new DataView(snapshot.buffer, snapshot.byteOffset, 8).getUint32(4, true);
  const memory = snapshot.length - header;
  for (const [address, start, end] of dataSegments(wasm)) {
    const stop = Math.min(end, start + memory - address);
    for (let i = start, j = header + address; i < stop; i++, j++) snapshot[j] ^= wasm[i];
  }
  return snapshot;
}
