// Who this window is: a name, and a development token for it from POST /demo/token (development mode
// only). The name is kept per window (sessionStorage), so two windows of one browser can be two
// people; the last name used is offered as the default (localStorage).

const WINDOW_KEY = 'switchboard-demo-name'
const LAST_KEY = 'switchboard-demo-last-name'

/** The address of a hub endpoint, relative to this page (so a hub mounted under a prefix works). */
export function endpoint (path, websocket = false) {
  const url = new URL(path, window.location.href)
  if (websocket) url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:'
  return url.toString()
}

/** A token for `name`: {token, user, name, expires_in}; throws an Error with the hub's reason. */
export async function fetchToken (name) {
  const response = await fetch(endpoint('token'), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name })
  })
  const body = await response.json().catch(() => ({}))
  if (!response.ok) throw new Error(body.error || `the hub answered ${response.status}`)
  return body
}

/**
 * The identity of this window: asks for a name with `form` (an input named "name", an element
 * [data-role=error]) unless the window has one, and gets a token for it. Resolves to
 * {token, user, name}, once the page's header shows the name (#me) and offers to change it
 * (#change-name: forgets the name and reloads).
 */
export async function identify (form) {
  const id = await askName(form)
  document.getElementById('me').textContent = id.name
  const change = document.getElementById('change-name')
  change.hidden = false
  change.addEventListener('click', () => {
    window.sessionStorage.removeItem(WINDOW_KEY)
    window.location.reload()
  })
  return id
}

function askName (form) {
  const saved = window.sessionStorage.getItem(WINDOW_KEY)
  return new Promise((resolve) => {
    const input = form.elements.namedItem('name')
    const error = form.querySelector('[data-role=error]')
    input.value = saved || window.localStorage.getItem(LAST_KEY) || ''
    const attempt = async (name) => {
      try {
        const id = await fetchToken(name)
        window.sessionStorage.setItem(WINDOW_KEY, id.name)
        window.localStorage.setItem(LAST_KEY, id.name)
        form.hidden = true
        resolve(id)
      } catch (err) {
        form.hidden = false
        error.textContent = err.message
        input.focus()
      }
    }
    form.addEventListener('submit', (event) => {
      event.preventDefault()
      attempt(input.value)
    })
    if (saved) attempt(saved)
    else {
      form.hidden = false
      input.focus()
    }
  })
}

/** A stable color for a user id, and its light variant (selections). */
export function colorOf (user) {
  let hash = 0
  for (const ch of user) hash = (hash * 31 + ch.codePointAt(0)) >>> 0
  const hue = hash % 360
  return { color: `hsl(${hue} 65% 42%)`, light: `hsl(${hue} 65% 42% / 0.2)` }
}
