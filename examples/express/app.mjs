// An ordinary Express 5 application: nothing in it knows about FastCGI.
// server.mjs serves it with libfcgi's createServer(); the same `app` would
// run under node:http's createServer() unchanged.
//
// APP_PREFIX=/app mounts every route under /app (for a web server that
// forwards https://example.org/app/... to this application; see README.md).
import express from 'express';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The CGI variables /request shows (all of them are in req.env). */
const SHOWN_CGI = ['REQUEST_URI', 'SCRIPT_NAME', 'PATH_INFO', 'QUERY_STRING', 'SERVER_SOFTWARE'];

export function createApp({ prefix = '/' } = {}) {
  const routes = express.Router();

  routes.get('/', (req, res) => {
    res.type('text').send('Hello from Express over FastCGI\n');
  });

  routes.get('/hello/:name', (req, res) => {
    res.json({ hello: req.params.name, query: req.query });
  });

  routes.post('/echo', express.json(), (req, res) => {
    res.status(201).json({ received: req.body });
  });

  // What the application sees of the request: handy when setting up the
  // web server (mount point, client address, https).
  routes.get('/request', (req, res) => {
    const cgi = {};
    for (const name of SHOWN_CGI) if (req.env?.[name] !== undefined) cgi[name] = req.env[name];
    res.json({
      method: req.method,
      url: req.url,                  // inside this router: without the mount path
      originalUrl: req.originalUrl,  // req.url as the server got it
      baseUrl: req.baseUrl,          // the mount path ('' at /)
      ip: req.ip,                    // REMOTE_ADDR
      protocol: req.protocol,        // 'https' when the web server sent HTTPS=on
      host: req.host,                // the Host header (HTTP_HOST)
      httpVersion: req.httpVersion,  // SERVER_PROTOCOL
      headers: req.headers,          // from the HTTP_* variables, CONTENT_TYPE, CONTENT_LENGTH
      cgi,
    });
  });

  // Three lines, 200 ms apart. `X-Accel-Buffering: no` asks nginx not to
  // buffer this response (as `fastcgi_buffering off` would); Apache needs
  // `flushpackets=on` on its ProxyPass (see README.md).
  routes.get('/stream', async (req, res) => {
    res.type('text');
    res.setHeader('X-Accel-Buffering', 'no');
    for (let i = 1; i <= 3; i++) {
      if (res.destroyed) return;  // the client went away
      res.write(`tick ${i}\n`);
      if (i < 3) await sleep(200);
    }
    res.end();
  });

  // Links and redirects built by the app must carry the mount path.
  routes.get('/redirect', (req, res) => {
    res.redirect(`${req.baseUrl}/hello/redirected`);
  });

  routes.get('/error', () => {
    throw new Error('an example failure');  // Express answers 500
  });

  const app = express();
  app.use(prefix, routes);
  return app;
}

export default createApp({ prefix: process.env.APP_PREFIX || '/' });
