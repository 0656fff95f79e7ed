// Set-ups shared by the tests that run the library in this process: the
// sockets, raw client connections, gates and Requests a test opens (all
// released in afterEach), and the seed's `while (await req.accept())` loop.
import { type FcgiSocket, initSocket, Request } from '../../src/index.js'
import { FcgiConnection, type FcgiTarget } from './fcgi-client.js'
import { withTimeout } from './wait.js'

/** A promise a handler can be parked on until the test opens it. */
export interface Gate {
  promise: Promise<void>
  open: () => void
}

/** What a test opens, kept so that release() (in afterEach) can end it all, even after a failure. */
export class TestSession {
  private readonly sockets: FcgiSocket[] = []
  private readonly connections: FcgiConnection[] = []
  private readonly gates: Array<() => void> = []
  private readonly requests: Request[] = []

  /** initSocket(), closed by release(). */
  listen(address: Parameters<typeof initSocket>[0], options: Parameters<typeof initSocket>[1] = {}): FcgiSocket {
    const sock = initSocket(address, options)
    this.sockets.push(sock)
    return sock
  }

  /** A raw FastCGI client connection, destroyed by release(). */
  async connect(target: FcgiTarget, timeoutMs?: number): Promise<FcgiConnection> {
    const conn = await FcgiConnection.connect(target, timeoutMs)
    this.connections.push(conn)
    return conn
  }

  /** A new Request on `sock` that release() finishes if the test left it active. */
  request(sock: FcgiSocket): Request {
    const req = new Request(sock)
    this.requests.push(req)
    return req
  }

  /** A gate that release() opens if the test did not. */
  gate(): Gate {
    let open!: () => void
    const promise = new Promise<void>((resolve) => { open = resolve })
    this.gates.push(open)
    return { promise, open }
  }

  /** Opens the gates, destroys the client connections, finishes the Requests, then closes the sockets (bounded). */
  async release(): Promise<void> {
    for (const g of this.gates.splice(0)) g()
    for (const c of this.connections.splice(0)) c.destroy()
    // A test that failed half-way leaves its request active: end it so close() can finish.
    await Promise.all(this.requests.splice(0).map((r) => withTimeout(r.finish(), 5000, 'Request.finish() in afterEach').catch(() => {})))
    await Promise.all(this.sockets.splice(0).map((s) => withTimeout(s.close(), 15000, 'FcgiSocket.close() in afterEach')))
  }
}

/**
 * Runs `n` Request objects on `sock`, each in the seed's `while (await req.accept())`
 * loop: handler, then finish(). Resolves, once the socket is closed, with how
 * many requests each loop served.
 */
export function serveLoops(sock: FcgiSocket, n: number, handler: (req: Request) => Promise<void>): Promise<number[]> {
  const loops: Array<Promise<number>> = []
  for (let i = 0; i < n; i++) {
    const req = new Request(sock)
    loops.push((async () => {
      let served = 0
      while (await req.accept()) {
        await handler(req)
        await req.finish()
        served++
      }
      return served
    })())
  }
  return Promise.all(loops)
}

/**
 * `n` accept loops on `sock` that drain each request's body and answer
 * "ok <REQUEST_URI>"; a loop that fails pushes its error to `errors`.
 */
export function serveOkLoops(sock: FcgiSocket, n: number, errors: unknown[]): void {
  for (let i = 0; i < n; i++) {
    void (async () => {
      const req = new Request(sock)
      while (await req.accept()) {
        for await (const _ of req.stdin) { /* drain */ }
        req.stdout.write(`Content-Type: text/plain\r\n\r\nok ${req.env.REQUEST_URI}`)
        await req.finish()
      }
    })().catch((err: unknown) => errors.push(err))
  }
}
