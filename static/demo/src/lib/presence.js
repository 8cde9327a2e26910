// Who is in a channel: the presence snapshot plus the join and leave pushes that follow it.
//
// A snapshot is asked for once the subscription is active, so every join or leave after the
// snapshot's moment arrives as a push; pushes that arrive while the snapshot is on its way are held
// and applied after it, in order (a join already in the snapshot changes nothing, a leave removes).
// Entries are connections (client ids); people() groups them by user.

export class Presence {
  constructor () {
    this.clients = new Map() // client id -> {user, name}
    this.held = null // pushes waiting for the snapshot, or null when none is awaited
  }

  /** A snapshot is on its way: hold the pushes until it arrives. */
  expectSnapshot () {
    this.held = []
  }

  /** The snapshot (the SDK's presence() result's `clients`), then the held pushes. */
  snapshot (clients) {
    this.clients = new Map()
    for (const info of Object.values(clients)) this._join(info)
    const held = this.held || []
    this.held = null
    for (const [kind, info] of held) this._apply(kind, info)
  }

  join (info) {
    this._apply('join', info)
  }

  leave (info) {
    this._apply('leave', info)
  }

  /** Everyone here, one entry per user: {user, name, connections, bot}, by name. */
  people () {
    const byUser = new Map()
    for (const { user, name, bot } of this.clients.values()) {
      const entry = byUser.get(user) || { user, name, connections: 0, bot: false }
      entry.connections += 1
      entry.bot = entry.bot || bot
      byUser.set(user, entry)
    }
    return [...byUser.values()].sort((a, b) => a.name.localeCompare(b.name))
  }

  _apply (kind, info) {
    if (this.held !== null) this.held.push([kind, info])
    else if (kind === 'join') this._join(info)
    else this.clients.delete(info.client)
  }

  _join (info) {
    this.clients.set(info.client, { user: info.user, name: displayName(info), bot: isBot(info) })
  }
}

/** Whether a client info is a bot's: the hub sets connInfo.bot (README "Agents: bots"), never a person's token. */
export function isBot (info) {
  return Boolean(info && info.connInfo && info.connInfo.bot === true)
}

/** The name to show for a client info (publications, presence): its token's name, else its user id. */
export function displayName (info) {
  if (!info) return 'server'
  const name = info.connInfo && typeof info.connInfo.name === 'string' ? info.connInfo.name : ''
  return name || info.user || 'anonymous'
}
