// What the demo pages built on the centrifuge SDK share: an element builder (every value from the hub
// is set as text, never as HTML) and the connection state in the header (#state).

/** An element with props (`dataset`, `className`, `on<event>` handlers, attributes) and children. */
export function el (tag, props = {}, ...children) {
  const node = document.createElement(tag)
  for (const [key, value] of Object.entries(props)) {
    if (key === 'dataset') Object.assign(node.dataset, value)
    else if (key === 'className') node.className = value
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value)
    else node.setAttribute(key, value)
  }
  node.append(...children.filter((c) => c !== null && c !== undefined))
  return node
}

/**
 * Show the SDK's connection state in #state: data-state, and data-connects counting the connects (the
 * tests wait on them). `ctx` is the SDK's event context (a disconnect's code and reason).
 */
export function showConnection (state, ctx) {
  const node = document.getElementById('state')
  node.dataset.state = state
  if (state === 'connected') node.dataset.connects = String(Number(node.dataset.connects) + 1)
  const again = Number(node.dataset.connects) > 0
  node.textContent = state === 'connected'
    ? 'connected'
    : state === 'connecting' ? (again ? 'reconnecting…' : 'connecting…') : `disconnected: ${ctx.reason} (${ctx.code})`
}
