// The sensor dashboard demo: a live chart of a plant's sensors on the official centrifuge SDK.
//
// - One channel (`sensors:plant`) carries every sensor; each reading names its sensor (`sensor`), the
//   namespace's key_field. Development mode's `sensors` namespace (hub/config.py DEV_SENSORS_OPTIONS)
//   conflates per sensor, keeps the latest reading of each, and allows fossil deltas.
// - On subscribe the hub recovers in cache mode: the latest reading of every sensor arrives at once,
//   before any new one, so a page opened mid-stream shows every value immediately (`recovered: false`
//   only when nothing was ever published: the page says it waits for the first readings).
// - `delta: 'fossil'`: the SDK applies the diffs; the page sees whole readings.
// - `?rate=N` asks for at most N readings a second per sensor (the subscribe data's max_rate; the hub
//   grants at most the namespace's 5).
// - Bounded: at most MAX_SENSORS sensors are shown (readings of others are counted, not drawn), and each
//   keeps the points of the last WINDOW_MS at most (MAX_POINTS).

import { Centrifuge } from 'centrifuge'
import { endpoint } from './lib/identity.js'
import { el, showConnection } from './lib/page.js'

const CHANNEL = 'sensors:plant'
const WINDOW_MS = 60_000
const MAX_POINTS = 600
const MAX_SENSORS = 24
const WIDTH = 1000
const HEIGHT = 360
const COLORS = ['#3158d4', '#c2410c', '#15803d', '#9333ea', '#b91c1c', '#0e7490', '#a16207', '#be185d']
const SVG = 'http://www.w3.org/2000/svg'

const byId = (id) => document.getElementById(id)
const sensors = new Map() // key -> {name, unit, points: [[time ms, value]], card, line}
let received = 0
let ignored = 0
let drawing = false

function sensorFor (key, reading) {
  let sensor = sensors.get(key)
  if (sensor) return sensor
  if (sensors.size >= MAX_SENSORS) return null
  const color = COLORS[sensors.size % COLORS.length]
  const value = el('span', { className: 'sensor-value', dataset: { testid: 'value' } })
  const card = el('li', { className: 'sensor-card', dataset: { testid: 'sensor', sensor: key, updates: '0' } },
    el('span', { className: 'dot', style: `background:${color}` }),
    el('span', { className: 'sensor-name' }, String(reading.name || key)),
    value,
    el('span', { className: 'sensor-unit' }, String(reading.unit || '')),
    el('span', { className: 'sensor-age muted', dataset: { testid: 'age' } }))
  const line = document.createElementNS(SVG, 'polyline')
  line.setAttribute('fill', 'none')
  line.setAttribute('stroke', color)
  line.setAttribute('stroke-width', '2')
  line.setAttribute('vector-effect', 'non-scaling-stroke')
  line.dataset.sensor = key
  byId('chart').append(line)
  const cards = byId('sensors')
  const after = [...cards.children].find((c) => c.dataset.sensor > key)
  cards.insertBefore(card, after || null)
  sensor = { name: reading.name, unit: reading.unit, points: [], card, value, line }
  sensors.set(key, sensor)
  return sensor
}

function apply (reading) {
  received += 1
  if (!reading || typeof reading !== 'object' || typeof reading.value !== 'number') return
  const key = String(reading.sensor ?? '')
  const sensor = sensorFor(key, reading)
  if (!sensor) {
    ignored += 1
    return
  }
  const time = typeof reading.time === 'number' ? reading.time : Date.now()
  sensor.points.push([time, reading.value])
  const cut = time - WINDOW_MS
  while (sensor.points.length > MAX_POINTS || (sensor.points.length && sensor.points[0][0] < cut)) {
    sensor.points.shift()
  }
  sensor.value.textContent = reading.value.toFixed(2)
  sensor.card.dataset.value = String(reading.value)
  sensor.card.dataset.time = String(time)
  sensor.card.dataset.updates = String(Number(sensor.card.dataset.updates) + 1)
  if (!drawing) {
    drawing = true
    window.requestAnimationFrame(draw)
  }
}

let sub = null

function draw () {
  drawing = false
  const now = Date.now()
  for (const sensor of sensors.values()) {
    const values = sensor.points.map((p) => p[1])
    const low = Math.min(...values)
    const high = Math.max(...values)
    const span = high - low || 1
    sensor.line.setAttribute('points', sensor.points.map(([t, v]) => {
      const x = WIDTH - ((now - t) / WINDOW_MS) * WIDTH
      const y = HEIGHT - 10 - ((v - low) / span) * (HEIGHT - 20)
      return `${x.toFixed(1)},${y.toFixed(1)}`
    }).join(' '))
    const last = sensor.points[sensor.points.length - 1]
    sensor.card.querySelector('[data-testid=age]').textContent = last ? `${Math.max(0, Math.round((now - last[0]) / 1000))} s ago` : ''
  }
  // The SDK counts the publications that came as fossil deltas (no public API for it: shown if it is there).
  const deltas = sub && typeof sub._deltaNumDelta === 'number' ? sub._deltaNumDelta : null
  const stats = byId('stats')
  stats.dataset.received = String(received)
  if (deltas !== null) stats.dataset.deltas = String(deltas)
  stats.textContent = `${received} readings received` +
    (deltas !== null ? `, ${deltas} of them as fossil deltas` : '') +
    (ignored ? `, ${ignored} of sensors past ${MAX_SENSORS} not shown` : '') + '.'
}

function main () {
  const rate = Number(new URLSearchParams(window.location.search).get('rate'))
  const centrifuge = new Centrifuge(endpoint('../connection/websocket', true))
  centrifuge.on('connecting', (ctx) => showConnection('connecting', ctx))
  centrifuge.on('connected', (ctx) => showConnection('connected', ctx))
  centrifuge.on('disconnected', (ctx) => showConnection('disconnected', ctx))
  const options = { delta: 'fossil' }
  if (rate > 0) options.data = { max_rate: rate }
  sub = centrifuge.newSubscription(CHANNEL, options)
  sub.on('subscribed', (ctx) => {
    const feed = byId('feed')
    feed.dataset.recovered = String(Boolean(ctx.recovered))
    feed.textContent = ctx.recovered ? `${CHANNEL} · latest values recovered` : `${CHANNEL} · waiting for the first readings`
    byId('banner').hidden = true
  })
  sub.on('publication', (ctx) => apply(ctx.data))
  sub.on('error', (ctx) => {
    byId('banner').textContent = `The feed failed: ${ctx.error.message} (${ctx.error.code}). Is this hub in development mode?`
    byId('banner').hidden = false
  })
  sub.on('unsubscribed', (ctx) => {
    byId('banner').textContent = `Unsubscribed: ${ctx.reason} (${ctx.code})`
    byId('banner').hidden = false
  })
  sub.subscribe()
  centrifuge.connect()
  window.setInterval(draw, 1000) // the lines slide and the ages count on between readings
}

main()
