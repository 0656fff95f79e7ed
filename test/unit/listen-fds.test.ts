import { describe, expect, it } from 'vitest'

import { systemdListenFd } from '../../src/listen-fds.js'

describe('systemdListenFd (sd_listen_fds)', () => {
  it('fd 3 when LISTEN_PID is this process and LISTEN_FDS >= 1', () => {
    expect(systemdListenFd({ LISTEN_PID: '42', LISTEN_FDS: '1' }, 42)).toBe(3)
    expect(systemdListenFd({ LISTEN_PID: '42', LISTEN_FDS: '2' }, 42)).toBe(3)
  })
  it('none for another process (inherited variables), no variables, or nonsense', () => {
    expect(systemdListenFd({ LISTEN_PID: '41', LISTEN_FDS: '1' }, 42)).toBeUndefined()
    expect(systemdListenFd({}, 42)).toBeUndefined()
    expect(systemdListenFd({ LISTEN_FDS: '1' }, 42)).toBeUndefined()
    expect(systemdListenFd({ LISTEN_PID: '42', LISTEN_FDS: '0' }, 42)).toBeUndefined()
    expect(systemdListenFd({ LISTEN_PID: '42x', LISTEN_FDS: '1' }, 42)).toBeUndefined()
    expect(systemdListenFd({ LISTEN_PID: '42', LISTEN_FDS: '-1' }, 42)).toBeUndefined()
  })
})
