// The CommonJS build (dist/index.cjs) works in a plain require() program.
import { afterEach, beforeAll, describe, expect, it } from 'vitest';

import { defaultParams, fcgiRequest, parseCgiResponse } from '../helpers/fcgi-client.js';
import { tmpSocketPath } from '../helpers/wait.js';
import { assertDistFresh, CRASH_PATTERN, fixture, killAllChildren, startChild } from './child.js';

beforeAll(() => assertDistFresh(['dist/index.js', 'dist/index.cjs']));
afterEach(killAllChildren);

describe('CommonJS build', () => {
  it('require(dist/index.cjs): initSocket + Request serve a request, then the process exits 0', async () => {
    const path = tmpSocketPath('cjs');
    const child = startChild(fixture('cjs-serve.cjs'), [path]);
    await child.waitForOutput(/^listening isCGI=true$/m);
    const r = await fcgiRequest({ path }, { params: defaultParams({ REQUEST_URI: '/cjs' }), stdin: 'hello', timeoutMs: 10000 });
    expect(r.protocolStatus).toBe(0);
    expect(parseCgiResponse(r.stdout).body.toString()).toBe('from commonjs uri=/cjs body=hello');
    const exit = await child.waitExit(10000);
    expect(child.lines(), child.describe()).toContain('closed');
    expect(exit, child.describe()).toEqual({ code: 0, signal: null });
    expect(child.stderr, child.describe()).not.toMatch(CRASH_PATTERN);
  });
});
