// systemd socket activation (sd_listen_fds(3)): systemd (or
// systemd-socket-activate) opens the listening socket and starts the
// service with it as fd 3, telling it so with LISTEN_FDS=1 and
// LISTEN_PID=<the service's pid>. LISTEN_PID is checked so that a child
// process that inherited the variables does not take them for its own.
// Only the first socket (fd 3) is used: a FastCGI server has one.

/** SD_LISTEN_FDS_START */
export const SD_LISTEN_FDS_START = 3

/** The fd systemd passed to this process (3), or undefined when it passed none. */
export function systemdListenFd(env: NodeJS.ProcessEnv = process.env, pid: number = process.pid): number | undefined {
  if (env.LISTEN_PID === undefined || env.LISTEN_FDS === undefined) return undefined
  if (!/^\d+$/.test(env.LISTEN_PID) || Number(env.LISTEN_PID) !== pid) return undefined
  if (!/^\d+$/.test(env.LISTEN_FDS) || Number(env.LISTEN_FDS) < 1) return undefined
  return SD_LISTEN_FDS_START
}
