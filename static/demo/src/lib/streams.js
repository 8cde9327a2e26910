// Streamed replies (the hub's channels/streams.py): a channel's stream publications reassembled into
// whole texts, as centrifuge-js delivers them. A publication whose data has a `stream` member is part of
// a streamed message: {stream: {id, seq, from?, final?, abandoned?}, text, ...}.
//   - from 0: the whole text so far (what a subscriber that joins or recovers mid-stream gets first, and
//     the finished message, marked final): it replaces what the view had
//   - from = last seq + 1 (or no from, seq = last + 1): a chunk, or a run of chunks, appended
//   - ending before the last seq seen (or at it, not from 0): a duplicate, ignored
//   - anything else: a gap (its start was never seen), counted and ignored; the finished message
//     (from 0) still makes the text whole.

/** The stream fields of a publication's data, or null for an ordinary publication. */
export function streamFields (data) {
  if (!data || typeof data !== 'object' || Array.isArray(data)) return null
  const fields = data.stream
  if (!fields || typeof fields !== 'object' || typeof fields.id !== 'string') return null
  if (!Number.isInteger(fields.seq) || typeof data.text !== 'string') return null
  return fields
}

export class StreamView {
  constructor () {
    this.texts = new Map()
    this.seqs = new Map()
    this.finished = new Set()
    this.gaps = 0
    this.duplicates = 0
  }

  /**
   * Take one publication's data. Returns {id, text, final, abandoned, data} when the stream's text
   * changed (or it finished), null otherwise (an ordinary publication, a duplicate, a gap).
   */
  feed (data) {
    const fields = streamFields(data)
    if (fields === null) return null
    const { id, seq } = fields
    const first = Number.isInteger(fields.from) ? fields.from : seq
    const known = this.seqs.get(id)
    if (known !== undefined && (seq < known || (seq === known && first > 0))) {
      this.duplicates += 1
      return null
    }
    if (first === 0) {
      this.texts.set(id, data.text)
    } else if (known !== undefined && first === known + 1) {
      this.texts.set(id, this.texts.get(id) + data.text)
    } else {
      this.gaps += 1
      return null
    }
    this.seqs.set(id, seq)
    if (fields.final) this.finished.add(id)
    return { id, text: this.texts.get(id), final: Boolean(fields.final), abandoned: Boolean(fields.abandoned), data }
  }

  /** Forget a stream (its message left the page): memory stays bounded by what is shown. */
  forget (id) {
    this.texts.delete(id)
    this.seqs.delete(id)
    this.finished.delete(id)
  }
}
