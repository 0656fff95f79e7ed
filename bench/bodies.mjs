// The benchmark's workloads, shared by the Node apps (bench/c-threaded-hello.c
// serves the same): by the URL's path,
//   /hello  "Hello World\n"
//   /64k    64 KiB of 'a'..'z' repeated
//   /1m     1 MiB of the same
//   /echo   the request body, echoed back once all of it is in
// The bodies are generated once, at import.
export const SIZE_64K = 64 * 1024
export const SIZE_1M = 1024 * 1024
export const BODY_1M = Buffer.alloc(SIZE_1M)
for (let i = 0; i < SIZE_1M; i++) BODY_1M[i] = 0x61 + (i % 26)
export const BODY_64K = BODY_1M.subarray(0, SIZE_64K)

/** 'hello' | '64k' | '1m' | 'echo' | undefined for the path of a URL. */
export function route(url) {
  const q = url.indexOf('?')
  const path = q < 0 ? url : url.slice(0, q)
  switch (path) {
    case '/':
    case '/hello': return 'hello'
    case '/64k': return '64k'
    case '/1m': return '1m'
    case '/echo': return 'echo'
    default: return undefined
  }
}
