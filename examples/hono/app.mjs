// An ordinary Hono application: `app.fetch(request, env)` is all a server
// needs. server.mjs serves it with libfcgi's serve({ fetch }); the same app
// runs under @hono/node-server, Bun or Deno unchanged.
//
// APP_PREFIX=/app puts every route under /app (for a web server that forwards
// https://example.org/app/... to this application; see README.md).
import { Hono } from 'hono';
import { streamText } from 'hono/streaming';

/** The CGI variables /request shows. */
const SHOWN_CGI = ['REQUEST_URI', 'SCRIPT_NAME', 'PATH_INFO', 'QUERY_STRING', 'SERVER_SOFTWARE'];

export function createApp({ prefix = '/' } = {}) {
  // strict: false: /app/ and /app are the same route.
  const app = prefix === '/' ? new Hono() : new Hono({ strict: false }).basePath(prefix);

  app.get('/', (c) => c.text('Hello from Hono over FastCGI\n'));

  app.get('/hello/:name', (c) => c.json({ hello: c.req.param('name'), query: c.req.query() }));

  app.post('/echo', async (c) => c.json({ received: await c.req.json() }, 201));

  // What the application sees of the request. Under libfcgi's serve(),
  // Hono's `c.env` is serve()'s second fetch argument:
  // { env: all CGI variables, remoteAddress, remotePort }.
  app.get('/request', (c) => {
    const params = c.env?.env ?? {};
    const cgi = {};
    for (const name of SHOWN_CGI) if (params[name] !== undefined) cgi[name] = params[name];
    return c.json({
      method: c.req.method,
      url: c.req.url,    // absolute: scheme (HTTPS=on) + Host header + REQUEST_URI
      path: c.req.path,
      remoteAddress: c.env?.remoteAddress ?? null,
      cgi,
    });
  });

  // Three lines, 200 ms apart. `X-Accel-Buffering: no` asks nginx not to
  // buffer this response (as `fastcgi_buffering off` would); Apache needs
  // `flushpackets=on` on its ProxyPass (see README.md).
  app.get('/stream', (c) => {
    c.header('X-Accel-Buffering', 'no');
    return streamText(c, async (stream) => {
      for (let i = 1; i <= 3; i++) {
        await stream.write(`tick ${i}\n`);
        if (i < 3) await stream.sleep(200);
      }
    });
  });

  // Links and redirects: c.req.path includes the prefix, so build them from it.
  app.get('/redirect', (c) => c.redirect(`${prefix === '/' ? '' : prefix}/hello/redirected`));

  app.get('/error', () => {
    throw new Error('an example failure');  // Hono answers 500
  });

  return app;
}

export default createApp({ prefix: process.env.APP_PREFIX || '/' });
