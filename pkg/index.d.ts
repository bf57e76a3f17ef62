// Types of the flint web package (index.js).

/** Load progress, in bytes of the model file. */
export interface LoadProgress {
  /** File bytes uploaded to the GPU so far (header included). */
  loaded: number;
  /** The file's size in bytes (header + tensors). */
  total: number;
  /** Bytes fetched from the network so far. */
  networkBytes: number;
  /** Bytes read from the cache (or a local file in Node) so far. */
  cacheBytes: number;
  /** Network requests made so far. */
  requests: number;
}

export interface CreateEngineOptions {
  /**
   * URL of a GGUF file (fetched with HTTP Range requests), a Blob/File, or in Node a file path.
   * A generation model gets `chat` and `completions`; an embedding model (an encoder such as BERT,
   * or a GGUF with `<arch>.pooling_type`) gets `embeddings` (see `info().model.kind`).
   */
  model: string | URL | Blob;
  /** Called as the weights stream to the GPU. */
  onProgress?: (p: LoadProgress) => void;
  /** Run the engine in a Web Worker (default in browsers) or on this thread (default in Node). */
  worker?: boolean;
  /** Where worker.js is, if a bundler moved it. */
  workerUrl?: string | URL;
  /** Where flint_wasm_bg.wasm is, if a bundler moved it. */
  wasmUrl?: string | URL;
  /** Cache downloaded pieces with the Cache API so the next load makes no request (default true). */
  cache?: boolean;
  /** Aborts the load. */
  signal?: AbortSignal;
  /** A WebGPU `GPU` object to use instead of `navigator.gpu` (in-thread only). */
  gpu?: unknown;
  /** Context length in tokens (KV cache size); default min(model's, 4096). Generation models only. */
  ctx?: number;
  /** Most prompt tokens per forward pass (default 256). */
  batch?: number;
  /** Use a lower storage-binding limit than the device's (tensors are split more; for testing). */
  maxStorageBufferBindingSize?: number;
  /** Use the shared-memory kernels even where subgroups exist. */
  noSubgroups?: boolean;
  /** Do not use `shader-f16` even where it exists. */
  noF16?: boolean;
  /**
   * Kernel layout (the CLI's `--kernels`): `'gpu'` (workgroups reduce across threads: real GPUs),
   * `'cpu'` (one weight row or query per invocation: CPU-type adapters such as SwiftShader),
   * `'auto'` (default: by the adapter's type). Reported as `info().caps.kernelLayout`.
   */
  kernels?: 'auto' | 'gpu' | 'cpu';
  /**
   * KV cache precision (the CLI's `--kv-cache`): `'f32'` (default, exact), `'q16'` (half the
   * memory: 16-bit fixed point with a scale per position and KV head; logits within 1e-2) or
   * `'f16'` (half the memory; logits within about 2e-2, so greedy text may differ). Neither
   * 16-bit type needs `shader-f16`.
   * Reported as `info().caps.kvCache`.
   */
  kvCache?: 'f32' | 'f16' | 'q16';
  /**
   * How the tiled prefill matmul (the `gpu` kernel layout) stages activations and dequantized
   * weights in workgroup memory (the CLI's `--matmul`; products and sums always f32): `'f32'`
   * (default, exact), `'q16'` (half the memory: 16-bit fractions of each 32-element slice's
   * largest magnitude, any adapter; logits within 1e-2) or `'f16'` (half the memory; needs
   * `shader-f16`, and loading fails, naming it, where it is missing; logits within about 2e-2).
   * Reported as `info().caps.matmul`.
   */
  matmul?: 'f32' | 'f16' | 'q16';
  /**
   * Where greedy picks run (the CLI's `--sample-on`): `'gpu'` (a greedy request, `temperature: 0`
   * without `logit_bias` or penalties, ranks the logits on the GPU and reads back one token
   * instead of the whole row of logits), `'cpu'` (the whole row every token), `'auto'` (default:
   * gpu on real GPUs, cpu on CPU-type adapters). The same tokens either way; other requests
   * always read the row. Reported as `info().caps.sampleOn`.
   */
  sampleOn?: 'auto' | 'gpu' | 'cpu';
}

export type Role = 'system' | 'user' | 'assistant' | 'tool' | (string & {});

/** A call the model made: `arguments` is a JSON text that validates against the tool's `parameters`. */
export interface ToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

/** A message's text: a string, or text parts (joined; other part types are rejected). */
export type MessageContent = string | Array<{ type: 'text'; text: string }>;

interface MessageFields {
  /** On an assistant message: the calls it made (content may then be null or left out). */
  tool_calls?: ToolCall[];
  /** On a `tool` message: the call it answers. */
  tool_call_id?: string;
  /** On a `tool` message: the tool's name (some templates print it). */
  name?: string;
}

/**
 * A message of the conversation. Every message has `content` but an assistant's, which may be
 * null or left out (one that only made tool calls); an answer's `message` can be sent back as it is.
 */
export type ChatMessage =
  | (MessageFields & { role: 'assistant'; content?: MessageContent | null })
  | (MessageFields & { role: Role; content: MessageContent });

/** An OpenAI function tool; `parameters` is a JSON Schema of an object. */
export interface Tool {
  type: 'function';
  function: {
    name: string;
    description?: string;
    parameters?: Record<string, unknown>;
    strict?: boolean;
  };
}

export type ToolChoice = 'none' | 'auto' | 'required' | { type: 'function'; function: { name: string } };

/** `response_format`: free text, any JSON object, or JSON that validates against `json_schema.schema`. */
export type ResponseFormat =
  | { type: 'text' }
  | { type: 'json_object' }
  | { type: 'json_schema'; json_schema: { name: string; schema?: Record<string, unknown>; strict?: boolean; description?: string } };

interface SamplingRequest {
  /** Most tokens to generate (default: up to the end of the context). */
  max_tokens?: number;
  max_completion_tokens?: number;
  /** 0 = greedy; default 1. */
  temperature?: number;
  /** Nucleus sampling; default 1 (off). */
  top_p?: number;
  /** Same seed, same text. */
  seed?: number;
  /** Up to 4 strings that end generation (not included in the text). */
  stop?: string | string[];
  presence_penalty?: number;
  frequency_penalty?: number;
  /** Token id -> bias added to its logit. */
  logit_bias?: Record<string, number>;
  /** Enforced while decoding (llguidance): a `json_schema` answer that ends with `stop` validates. */
  response_format?: ResponseFormat;
  /**
   * Speculative decoding (flint's extension): proposes what followed the latest earlier
   * occurrence of the last tokens in the prompt and answer, and checks the proposal in one pass.
   * The same text (greedy) or the same distribution (sampling) as without; faster when the
   * answer copies its input. Default `'ngram'` (on); `false` or `'off'` turns it off.
   */
  speculative?: boolean | 'ngram' | 'off' | { mode?: 'ngram' | 'off'; draft_max?: number; draft_min?: number };
  n?: 1;
  stream?: boolean;
  stream_options?: { include_usage?: boolean };
  /** Aborts the request (also accepted as the second argument's `signal`). */
  signal?: AbortSignal;
}

export interface ChatCompletionRequest extends SamplingRequest {
  messages: ChatMessage[];
  /** Tools the model may call; every call it returns names one of them and validates. */
  tools?: Tool[];
  /** Default `'auto'` when tools are given. */
  tool_choice?: ToolChoice;
  /** Default true; false allows exactly one call per answer. */
  parallel_tool_calls?: boolean;
}

export interface CompletionRequest extends SamplingRequest {
  /** Text (the model's BOS is added as it wants) or token ids. */
  prompt: string | number[];
}

export type FinishReason = 'stop' | 'length' | 'tool_calls';

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** llama.cpp server's timings: prompt = prefill, predicted = decode. */
export interface Timings {
  prompt_n: number;
  prompt_ms: number;
  prompt_per_second: number;
  predicted_n: number;
  predicted_ms: number;
  predicted_per_second: number;
  /** Speculative decoding: tokens drafted, and how many of them were kept. */
  draft_n: number;
  draft_n_accepted: number;
}

export interface ChatCompletion {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: Array<{
    index: 0;
    message: { role: 'assistant'; content: string | null; refusal: null; tool_calls?: ToolCall[] };
    logprobs: null;
    finish_reason: FinishReason;
    /** The generated token ids (flint extension). */
    token_ids: number[];
  }>;
  usage: Usage;
  timings: Timings;
}

export interface ChatCompletionChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: Array<{
    index: 0;
    /**
     * Text, or a piece of a call: its first delta carries `index`, `id`, `type`,
     * `function.name` and `arguments: ''`; later ones argument text under the same `index`.
     */
    delta: {
      role?: 'assistant';
      content?: string;
      tool_calls?: Array<{
        index: number;
        id?: string;
        type?: 'function';
        function: { name?: string; arguments: string };
      }>;
    };
    logprobs: null;
    finish_reason: FinishReason | null;
  }>;
  /** With `stream_options.include_usage`, on a last chunk whose `choices` is empty. */
  usage?: Usage;
  /** On the chunk that carries `finish_reason`. */
  timings?: Timings;
  token_ids?: number[];
}

export interface Completion {
  id: string;
  object: 'text_completion';
  created: number;
  model: string;
  choices: Array<{ index: 0; text: string; logprobs: null; finish_reason: FinishReason; token_ids: number[] }>;
  usage: Usage;
  timings: Timings;
}

export interface CompletionChunk {
  id: string;
  object: 'text_completion';
  created: number;
  model: string;
  choices: Array<{ index: 0; text: string; logprobs: null; finish_reason: FinishReason | null }>;
  usage?: Usage;
  timings?: Timings;
  token_ids?: number[];
}

/** OpenAI's embeddings request. */
export interface EmbeddingRequest {
  /**
   * A text, texts (one vector each), one input as token ids, or inputs as token ids; at most 2048
   * inputs, none empty, each within the model's token limit (`info().model.embedding.maxTokens`).
   * Text gets the model's special tokens (`[CLS]` ... `[SEP]`); token ids are used as they are.
   */
  input: string | string[] | number[] | number[][];
  /** Accepted and ignored: the loaded model embeds (the response names it). */
  model?: string;
  /** `'float'` (default): arrays of numbers; `'base64'`: each vector's little-endian float32 bytes in base64. */
  encoding_format?: 'float' | 'base64';
  /** Keep the first N components, L2-normalized again (Matryoshka models); 1 up to the model's dimensions. */
  dimensions?: number;
  /** Cut inputs over the model's token limit (keeping the final `[SEP]`) instead of rejecting them (flint extension). */
  truncate?: boolean;
  /** Checked before the request runs (also accepted as the second argument's `signal`). */
  signal?: AbortSignal;
}

export interface Embedding<E = number[]> {
  object: 'embedding';
  /** The input's position in `input`. */
  index: number;
  /** The vector (L2-normalized when the model says so, as all GGUF embedders do); a base64 string with `encoding_format: 'base64'`. */
  embedding: E;
}

export interface CreateEmbeddingResponse<E = number[]> {
  object: 'list';
  data: Array<Embedding<E>>;
  model: string;
  usage: { prompt_tokens: number; total_tokens: number };
}

/** The chunks of a streamed response; breaking out of the loop stops generation. */
export interface ChunkStream<T> extends AsyncIterableIterator<T> {
  controller: AbortController;
}

export interface RequestOptions {
  signal?: AbortSignal;
}

export interface EngineInfo {
  adapter: string;
  backend: string;
  deviceType: string;
  caps: {
    shaderF16: boolean;
    subgroups: boolean;
    subgroupMatvec: boolean;
    maxStorageBufferBindingSize: number;
    maxBufferSize: number;
    maxComputeInvocationsPerWorkgroup: number;
    /** The kernel layout in use (what the `kernels` option resolved to). */
    kernelLayout: 'gpu' | 'cpu';
    /** The KV cache's precision (the `kvCache` option). */
    kvCache: 'f32' | 'f16' | 'q16';
    /** The prefill matmul's operands (the `matmul` option; on the cpu kernel layout 16-bit tiles
     * serve only the weights the rows kernels cannot take). */
    matmul: 'f32' | 'f16' | 'q16' | (string & {});
    /** Where greedy picks rank the logits (what the `sampleOn` option resolved to). */
    sampleOn: 'gpu' | 'cpu';
  };
  /** The compute kernels compiled so far (their names say the variant: f32/f16, subgroup or not). */
  kernels: string[];
  model: {
    /** `'embedding'`: the engine has `embeddings` (chat and completions reject); `'generation'`: the reverse. */
    kind: 'generation' | 'embedding';
    architecture: string;
    params: Record<string, string>;
    vocab: number;
    hasChatTemplate: boolean;
    /** An embedding model's vectors: their length, how the token states are pooled, the token limit of one input. */
    embedding?: { dimensions: number; pooling: 'mean' | 'cls' | 'last'; normalize: boolean; maxTokens: number };
  };
  /** The context length (KV cache size); an embedding model's token limit per input. */
  ctx: number;
  loadMs: number;
  url: string;
  fileBytes: number;
  headerBytes: number;
  tensorBytes: number;
  largestReadBytes: number;
  gpuWeightBytes: number;
  networkBytes: number;
  cacheBytes: number;
  requests: number;
  /** Size of the wasm memory, which only grows: the peak so far. */
  wasmMemoryBytes: number;
  worker: boolean;
}

/** What {@link Engine.bench} measures: llama-bench's -p, -n, -d and -r. A list of lengths runs one test
 * per value (every test at every depth, depth first). */
export interface BenchOptions {
  /** Prompt tokens of the prefill test `ppN` (random ids, one prompt from an empty cache); 0 skips it. Default 512. */
  nPrompt?: number | number[];
  /** Greedy decode steps of the decode test `tgN`, after a one-token prompt; 0 skips it. Default 128. */
  nGen?: number | number[];
  /** Tokens put in the KV cache (untimed) before every repetition. Default 0. */
  nDepth?: number | number[];
  /** Timed repetitions of each test. Default 5. */
  repetitions?: number;
  /** Run each test once untimed first. Default true. */
  warmup?: boolean;
  /** Called after every repetition (warm-up included). */
  onRun?: (run: { test: string; run: number; runs: number; tokensPerSecond: number }) => void;
}

export interface BenchTest {
  /** `pp512`, `tg128`, `tg128 @ d4096`. */
  test: string;
  n_prompt: number;
  n_gen: number;
  n_depth: number;
  min_tps: number;
  median_tps: number;
  max_tps: number;
  samples_tps: number[];
  /** Host microseconds per token spent recording and submitting GPU work (waits excluded). */
  host_us_per_token: number;
  /** The part of host_us_per_token spent finishing command buffers and submitting them. */
  submit_us_per_token: number;
  /** Compute dispatches recorded per token. */
  dispatches_per_token: number;
  /** Bind groups created per token (misses of the bind-group cache). */
  bind_groups_per_token: number;
}

/** The report `flint bench --json` prints, field for field. */
export interface BenchReport {
  flint_version: string;
  model: string;
  architecture: string;
  quant: string;
  model_bytes: number;
  params: number;
  adapter: string;
  backend: string;
  device_type: string;
  driver: string;
  batch: number;
  ctx: number;
  repetitions: number;
  kernel_layout: 'gpu' | 'cpu';
  sampling: 'gpu' | 'cpu';
  kv_cache: string;
  matmul: string;
  tests: BenchTest[];
  /** Weight bytes one decode step reads. */
  decode_weight_bytes_per_token: number;
  /** decode_weight_bytes_per_token x median decode tokens/s, in GB/s (null without a decode test). */
  decode_weight_gbps: number | null;
  /** The adapter's copy bandwidth (read + write), measured in the same run. */
  copy_gbps: number;
  copy_bytes: number;
  /** decode_weight_gbps / copy_gbps. */
  roofline_ratio: number | null;
}

export declare class Engine {
  private constructor();
  /** The model's name (its file name without `.gguf`). */
  readonly model: string;
  readonly chat: {
    completions: {
      create(body: ChatCompletionRequest & { stream: true }, opts?: RequestOptions): Promise<ChunkStream<ChatCompletionChunk>>;
      create(body: ChatCompletionRequest & { stream?: false }, opts?: RequestOptions): Promise<ChatCompletion>;
      create(body: ChatCompletionRequest, opts?: RequestOptions): Promise<ChatCompletion | ChunkStream<ChatCompletionChunk>>;
    };
  };
  readonly completions: {
    create(body: CompletionRequest & { stream: true }, opts?: RequestOptions): Promise<ChunkStream<CompletionChunk>>;
    create(body: CompletionRequest & { stream?: false }, opts?: RequestOptions): Promise<Completion>;
    create(body: CompletionRequest, opts?: RequestOptions): Promise<Completion | ChunkStream<CompletionChunk>>;
  };
  /** An embedding model's vectors (OpenAI's shape); rejects on a generation model. */
  readonly embeddings: {
    create(body: EmbeddingRequest & { encoding_format: 'base64' }, opts?: RequestOptions): Promise<CreateEmbeddingResponse<string>>;
    create(body: EmbeddingRequest & { encoding_format?: 'float' }, opts?: RequestOptions): Promise<CreateEmbeddingResponse<number[]>>;
    create(body: EmbeddingRequest, opts?: RequestOptions): Promise<CreateEmbeddingResponse<number[] | string>>;
  };
  info(): Promise<EngineInfo>;
  /** Token ids of a prompt (an embedding model's: those `embeddings.create` runs for the text). */
  tokenize(p: { messages: ChatMessage[] } | { prompt: string }): Promise<number[]>;
  /** Empties the KV cache (nothing to do for an embedding model). */
  reset(): Promise<void>;
  /** Measures prefill and decode tokens/s on this device as `flint bench` does; empties the KV cache.
   * Rejects if the engine's context cannot hold the tests (load with a larger `ctx`). */
  bench(options?: BenchOptions): Promise<BenchReport>;
  /** Frees the GPU memory; the engine cannot be used afterwards. */
  unload(): Promise<void>;
}

/** Loads a GGUF model onto this device's GPU. Rejects with an Error saying what went wrong. */
export declare function createEngine(options: CreateEngineOptions): Promise<Engine>;

/** Deletes the cached pieces of the model at `url` (all cached models without `url`). */
export declare function deleteCachedModel(url?: string | URL): Promise<boolean>;
