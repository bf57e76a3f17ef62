// Byte ranges of a model file, for the wasm loader's read(offset, length).
//
// A URL is fetched with HTTP Range requests in chunks of CHUNK bytes; each chunk is stored in the
// Cache API (browsers, workers) as it arrives, so a second load reads every byte from the cache and
// makes no request at all (the file size is cached too). At most two chunks are held in memory:
// the file as a whole never is. A Blob/File is sliced; in Node a path or file: URL is read with
// positioned reads.
//
// A server that ignores Range (python3 -m http.server) answers with 200 and the whole file. The
// loader reads the header from offset 0, then the tensors in file order, so that one response is
// read as a stream instead: cut into the same CHUNK-sized pieces as they arrive (each stored in the
// cache under the ranged path's key), held from the chunk of the latest read onwards and dropped
// as reads move past them. A read before what is held (and not in the cache) is an error: the
// stream cannot go back.

const CHUNK = 8 * 1024 * 1024;
export const CACHE_NAME = 'flint-models-v1';

const isNode = typeof process !== 'undefined' && !!process.versions?.node;

function netError(url, detail) {
  return new Error(`network error loading the model from ${url}: ${detail}`);
}

/** The Cache API where there is one (secure browser contexts); null elsewhere (Node, http pages). */
async function openCache(enabled) {
  if (!enabled || typeof caches === 'undefined') return null;
  try {
    return await caches.open(CACHE_NAME);
  } catch {
    return null; // e.g. storage disabled: load from the network every time
  }
}

function cacheKey(url, what) {
  const u = new URL(url);
  u.searchParams.set('flint-cache', what);
  return u.href;
}

async function fetchChecked(url, init) {
  let r;
  try {
    r = await fetch(url, init);
  } catch (e) {
    throw netError(url, e?.message || String(e));
  }
  if (!r.ok) throw netError(url, `HTTP ${r.status} ${r.statusText}`.trim());
  return r;
}

/** The total size from a `Content-Range: bytes a-b/size` header. */
function rangeTotal(r, url) {
  const m = /\/(\d+)\s*$/.exec(r.headers.get('content-range') || '');
  if (r.status !== 206 || !m) {
    throw netError(url, `the server answered a Range request with HTTP ${r.status} and no usable Content-Range ` +
      '(206 with Content-Range, or 200 with the whole file, is needed)');
  }
  return Number(m[1]);
}

/** The file's size from a 200 (whole file) answer to a Range request: its Content-Length. */
function wholeSize(r, url) {
  const fail = (detail) => {
    r.body?.cancel().catch(() => {});
    return netError(url, detail);
  };
  const why = 'the server ignores HTTP Range requests (it answered 200 with the whole file)';
  const encoding = (r.headers.get('content-encoding') || 'identity').trim().toLowerCase();
  if (encoding !== 'identity') {
    throw fail(`${why} and compresses it (Content-Encoding: ${encoding}), so the file's size is unknown: ` +
      'serve it uncompressed, or from a server that answers Range requests');
  }
  const len = r.headers.get('content-length');
  const size = len !== null && /^\s*\d+\s*$/.test(len) ? Number(len) : NaN;
  if (!Number.isSafeInteger(size)) {
    throw fail(`${why} and sent no Content-Length, so the file's size is unknown: ` +
      'serve it with a Content-Length, or from a server that answers Range requests');
  }
  if (!r.body) throw fail(`${why} with no body`);
  return size;
}

/**
 * The body of a 200 answer as a forward-only sequence of chunks: next(keep) reads the next
 * chunk's bytes from the network, returned when `keep` (else only counted and dropped).
 */
function wholeBody(r, url, size, stats) {
  const reader = r.body.getReader();
  let piece = new Uint8Array(0); // what the network gave beyond the last chunk taken
  let pos = 0; // bytes of the body taken
  return {
    get index() {
      return pos / CHUNK;
    },
    async next(keep) {
      const n = Math.min(CHUNK, size - pos);
      const out = keep ? new Uint8Array(n) : null;
      let at = 0;
      while (at < n) {
        if (!piece.length) {
          const { value, done } = await reader.read();
          if (done) throw netError(url, `the response ended after ${pos + at} of its ${size} bytes`);
          piece = value;
          continue;
        }
        const k = Math.min(piece.length, n - at);
        out?.set(piece.subarray(0, k), at);
        piece = piece.subarray(k);
        at += k;
        stats.networkBytes += k;
      }
      pos += n;
      if (pos === size && (piece.length || !(await reader.read()).done)) {
        this.close();
        throw netError(url, `the response is longer than its Content-Length of ${size} bytes`);
      }
      return out;
    },
    close() {
      reader.cancel().catch(() => {});
    },
  };
}

/**
 * Opens `model` (URL string or URL, Blob/File, or in Node a file path) for ranged reads.
 * Returns { url, size, read(offset, length) => Promise<Uint8Array>, stats, close() }.
 * stats counts bytes from the network and from the cache, and network requests.
 */
export async function openSource(model, { cache = true, signal } = {}) {
  const stats = { networkBytes: 0, cacheBytes: 0, requests: 0 };
  if (typeof Blob !== 'undefined' && model instanceof Blob) {
    return {
      url: model.name || 'blob',
      size: model.size,
      stats,
      async read(offset, length) {
        return new Uint8Array(await model.slice(offset, offset + length).arrayBuffer());
      },
      close() {},
    };
  }
  let url = model instanceof URL ? model.href : String(model ?? '');
  if (!url) throw new Error('createEngine: `model` must be the URL of a GGUF file');
  if (isNode && !/^(https?|data|blob):/i.test(url)) return openNodeFile(url, stats);
  url = new URL(url, globalThis.location?.href).href;

  const store = await openCache(cache);
  const metaKey = cacheKey(url, 'size');
  let size = null;
  let body = null; // the whole file as a stream, once the server answered a Range request with 200
  if (store) {
    const hit = await store.match(metaKey);
    if (hit) size = Number(await hit.text());
  }
  if (!Number.isSafeInteger(size) || size < 0) {
    stats.requests++;
    const r = await fetchChecked(url, { headers: { Range: 'bytes=0-0' }, signal });
    if (r.status === 200) {
      size = wholeSize(r, url);
      body = wholeBody(r, url, size, stats);
    } else {
      size = rangeTotal(r, url);
      await r.arrayBuffer().catch(() => {});
    }
    if (store) await store.put(metaKey, new Response(String(size)));
  }

  const held = new Map(); // chunk index -> Uint8Array
  const cached = new Set(); // chunks read from the cache (not stored again when streamed past)
  let low = 0; // streaming: chunks before this one were dropped (the chunk of the latest read)
  async function put(i, bytes) {
    if (!store || cached.has(i)) return;
    try {
      await store.put(cacheKey(url, `${size}:${i}`), new Response(bytes));
    } catch {
      // Quota exceeded: keep loading, uncached.
    }
  }
  async function chunk(i, pos) {
    if (held.has(i)) return held.get(i);
    const start = i * CHUNK;
    const end = Math.min(size, start + CHUNK);
    let bytes = null;
    if (store) {
      const hit = await store.match(cacheKey(url, `${size}:${i}`));
      if (hit) {
        bytes = new Uint8Array(await hit.arrayBuffer());
        if (bytes.length === end - start) {
          stats.cacheBytes += bytes.length;
          cached.add(i);
        } else bytes = null;
      }
    }
    if (!bytes && !body) {
      signal?.throwIfAborted?.();
      stats.requests++;
      const r = await fetchChecked(url, { headers: { Range: `bytes=${start}-${end - 1}` }, signal });
      if (r.status === 200) {
        // The server ignores Range (the size came from the cache): stream the whole file from here.
        if (wholeSize(r, url) !== size) {
          r.body.cancel().catch(() => {});
          throw netError(url, 'the file changed while loading');
        }
        body = wholeBody(r, url, size, stats);
      } else {
        if (rangeTotal(r, url) !== size) throw netError(url, 'the file changed while loading');
        bytes = new Uint8Array(await r.arrayBuffer());
        if (bytes.length !== end - start) {
          throw netError(url, `asked for ${end - start} bytes at ${start}, got ${bytes.length}`);
        }
        stats.networkBytes += bytes.length;
        await put(i, bytes);
      }
    }
    if (!bytes) {
      if (i < body.index) {
        throw new Error(`cannot read back to byte ${pos} of ${url}: the server ignores ` +
          'HTTP Range requests, so the file is read once, forward, as one stream, and those bytes were passed ' +
          'and dropped. Serve the model from a server that answers Range requests');
      }
      // Forward to chunk i; every chunk passed is stored in the cache (they are all whole).
      while (body.index <= i) {
        const at = body.index;
        signal?.throwIfAborted?.();
        const got = await body.next(at === i || !!store);
        if (at === i) bytes = got;
        else if (got) await put(at, got);
      }
      await put(i, bytes);
    }
    held.set(i, bytes);
    if (body) {
      for (const k of held.keys()) if (k < low) held.delete(k);
    } else {
      while (held.size > 2) held.delete(held.keys().next().value);
    }
    return bytes;
  }

  return {
    url,
    size,
    stats,
    async read(offset, length) {
      signal?.throwIfAborted?.();
      if (offset < 0 || offset + length > size) throw new Error(`read past the end of ${url} (${size} bytes)`);
      if (body) {
        // Reads go forward past the header: what lies before this read's chunk is not needed again.
        low = Math.floor(offset / CHUNK);
        for (const k of held.keys()) if (k < low) held.delete(k);
      }
      const out = new Uint8Array(length);
      let at = 0;
      while (at < length) {
        const pos = offset + at;
        const i = Math.floor(pos / CHUNK);
        const c = await chunk(i, pos);
        const from = pos - i * CHUNK;
        const n = Math.min(length - at, c.length - from);
        if (n <= 0) throw new Error(`read past the end of ${url} (${size} bytes)`);
        out.set(c.subarray(from, from + n), at);
        at += n;
      }
      return out;
    },
    close() {
      held.clear();
      body?.close();
    },
  };
}

async function openNodeFile(path, stats) {
  const { open } = await import('node:fs/promises');
  const { fileURLToPath } = await import('node:url');
  const file = path.startsWith('file:') ? fileURLToPath(path) : path;
  let fh;
  try {
    fh = await open(file, 'r');
  } catch (e) {
    throw new Error(`cannot open the model file ${file}: ${e.message}`);
  }
  const size = (await fh.stat()).size;
  return {
    url: file,
    size,
    stats,
    async read(offset, length) {
      const out = new Uint8Array(length);
      const { bytesRead } = await fh.read(out, 0, length, offset);
      if (bytesRead !== length) throw new Error(`${file}: short read at ${offset}`);
      stats.cacheBytes += length;
      return out;
    },
    close() {
      fh.close().catch(() => {});
    },
  };
}

/** Deletes every cached piece of the model at `url` (or all models when `url` is omitted). */
export async function deleteCachedModel(url) {
  if (typeof caches === 'undefined') return false;
  if (url === undefined) return caches.delete(CACHE_NAME);
  const store = await caches.open(CACHE_NAME);
  const base = new URL(String(url), globalThis.location?.href).href;
  let any = false;
  for (const req of await store.keys()) {
    const u = new URL(req.url);
    u.searchParams.delete('flint-cache');
    if (u.href === base) any = (await store.delete(req)) || any;
  }
  return any;
}
