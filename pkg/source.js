// Byte ranges of a model file, for the wasm loader's read(offset, length).
//
// A URL is fetched with HTTP Range requests in chunks of CHUNK bytes; each chunk is stored in the
// Cache API (browsers, workers) as it arrives, so a second load reads every byte from the cache and
// makes no request at all (the file size is cached too). At most two chunks are held in memory:
// the file as a whole never is. A Blob/File is sliced; in Node a path or file: URL is read with
// positioned reads.

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
    throw netError(url, 'the server does not answer HTTP Range requests (206 with Content-Range), ' +
      'which loading a model piece by piece needs');
  }
  return Number(m[1]);
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
  if (store) {
    const hit = await store.match(metaKey);
    if (hit) size = Number(await hit.text());
  }
  if (!Number.isSafeInteger(size) || size < 0) {
    stats.requests++;
    const r = await fetchChecked(url, { headers: { Range: 'bytes=0-0' }, signal });
    size = rangeTotal(r, url);
    await r.arrayBuffer().catch(() => {});
    if (store) await store.put(metaKey, new Response(String(size)));
  }

  const held = new Map(); // chunk index -> Uint8Array, the two most recent
  async function chunk(i) {
    if (held.has(i)) return held.get(i);
    const start = i * CHUNK;
    const end = Math.min(size, start + CHUNK);
    const key = cacheKey(url, `${size}:${i}`);
    let bytes = null;
    if (store) {
      const hit = await store.match(key);
      if (hit) {
        bytes = new Uint8Array(await hit.arrayBuffer());
        if (bytes.length === end - start) stats.cacheBytes += bytes.length;
        else bytes = null;
      }
    }
    if (!bytes) {
      signal?.throwIfAborted?.();
      stats.requests++;
      const r = await fetchChecked(url, { headers: { Range: `bytes=${start}-${end - 1}` }, signal });
      if (rangeTotal(r, url) !== size) throw netError(url, 'the file changed while loading');
      bytes = new Uint8Array(await r.arrayBuffer());
      if (bytes.length !== end - start) {
        throw netError(url, `asked for ${end - start} bytes at ${start}, got ${bytes.length}`);
      }
      stats.networkBytes += bytes.length;
      if (store) {
        try {
          await store.put(key, new Response(bytes));
        } catch {
          // Quota exceeded: keep loading, uncached.
        }
      }
    }
    held.set(i, bytes);
    while (held.size > 2) held.delete(held.keys().next().value);
    return bytes;
  }

  return {
    url,
    size,
    stats,
    async read(offset, length) {
      signal?.throwIfAborted?.();
      const out = new Uint8Array(length);
      let at = 0;
      while (at < length) {
        const pos = offset + at;
        const i = Math.floor(pos / CHUNK);
        const c = await chunk(i);
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
