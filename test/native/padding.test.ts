// Padding on the records that start a request and end its streams (any
// record may be padded; patch 0007): the request is answered and the
// connection stays usable.
import { afterEach, expect, it } from 'vitest'
import { defaultParams, encodeParams, encodeRecord, encodeRequest, FCGI_PARAMS, FCGI_STDIN } from '../helpers/fcgi-client.js'
import { TestSession } from '../helpers/session.js'
import { tmpSocketPath } from '../helpers/wait.js'
const session = new TestSession()
afterEach(() => session.release())
for (const [pb, pp, pe, ps] of [[5, 0, 0, 0], [0, 3, 0, 0], [0, 0, 7, 0], [0, 0, 0, 2], [255, 1, 255, 255]]) {
  it(`padding: BEGIN_REQUEST ${pb}, PARAMS ${pp}, empty PARAMS ${pe}, empty STDIN ${ps}`, async () => {
    const path = tmpSocketPath('pad')
    const sock = session.listen(path)
    const req = session.request(sock)
    void (async () => { while (await req.accept()) { req.stdout.write('ok'); await req.finish() } })()
    const conn = await session.connect({ path })
    const pairs = encodeParams(2, defaultParams({ REQUEST_URI: '/padded' })).subarray(0, -8)
    await conn.write(Buffer.concat([
      encodeRecord(1, 2, Buffer.from([0, 1, 1, 0, 0, 0, 0, 0]), { padding: pb }),
      encodeRecord(FCGI_PARAMS, 2, pairs.subarray(8), { padding: pp }),
      encodeRecord(FCGI_PARAMS, 2, undefined, { padding: pe }),
      encodeRecord(FCGI_STDIN, 2, undefined, { padding: ps }),
    ]))
    expect((await conn.readUntilEnd(2)).stdout.toString()).toBe('ok')
    // The connection is still in step: a second request on it is answered.
    await conn.write(encodeRequest({ requestId: 3, keepConn: true, params: defaultParams({ REQUEST_URI: '/next' }) }))
    expect((await conn.readUntilEnd(3)).stdout.toString()).toBe('ok')
  })
}
