// The few FastCGI encoders that plain .mjs children of the tests use (the
// TypeScript client, fcgi-client.ts, is for the tests themselves).

/** One record: header, content, no padding. */
export function record(type, id, content = Buffer.alloc(0)) {
  const h = Buffer.alloc(8)
  h[0] = 1
  h[1] = type
  h.writeUInt16BE(id, 2)
  h.writeUInt16BE(content.length, 4)
  return Buffer.concat([h, content])
}

function nameValue(name, value) {
  const n = Buffer.from(name)
  const v = Buffer.from(value)
  if (n.length > 127 || v.length > 127) throw new RangeError('fcgi-wire: short names and values only')
  return Buffer.concat([Buffer.from([n.length, v.length]), n, v])
}

/** A whole GET request (RESPONDER, id 1, no keep-conn) for `uri`. */
export function encodeRequest(uri) {
  const begin = Buffer.alloc(8)
  begin.writeUInt16BE(1)
  const params = Buffer.concat([nameValue('REQUEST_METHOD', 'GET'), nameValue('REQUEST_URI', uri), nameValue('SERVER_PROTOCOL', 'HTTP/1.1')])
  return Buffer.concat([record(1, 1, begin), record(4, 1, params), record(4, 1), record(5, 1)])
}
