/// One input's decoded samples not yet mixed: blocks on the timeline (sample positions), in
/// order, never overlapping. A gap between two blocks is silence that is not stored, so the
/// memory is what was decoded and not mixed yet, whatever the timestamps claim.
struct MixBuffer {
    struct Block {
        var start: Int64
        var left: [Float]
        var right: [Float]
        var end: Int64 { start + Int64(left.count) }
    }

    private(set) var blocks: [Block] = []
    /// Everything before this has been appended (or skipped as an overlap).
    private(set) var end: Int64 = 0

    /// Appends a block that begins at `position`; a gap before it stays empty (silence), an
    /// overlap with what came before is dropped.
    mutating func append(left blockLeft: UnsafeBufferPointer<Float>, right blockRight: UnsafeBufferPointer<Float>, at position: Int64) {
        let skip = position < end ? Int(min(end - position, Int64(blockLeft.count))) : 0
        guard skip < blockLeft.count else { return }
        let start = max(position, end)
        if let last = blocks.indices.last, blocks[last].end == start {
            blocks[last].left.append(contentsOf: blockLeft[skip...])
            blocks[last].right.append(contentsOf: blockRight[skip...])
        } else {
            blocks.append(Block(start: start, left: Array(blockLeft[skip...]), right: Array(blockRight[skip...])))
        }
        end = start + Int64(blockLeft.count - skip)
    }

    /// Adds `count` samples from `position` into the planes (silence where there are none).
    func mix(into l: UnsafeMutablePointer<Float>, _ r: UnsafeMutablePointer<Float>, from position: Int64, count: Int) {
        let until = position + Int64(count)
        for block in blocks {
            if block.end <= position { continue }
            if block.start >= until { break }
            let first = max(position, block.start)
            let last = min(until, block.end)
            for p in first..<last {
                l[Int(p - position)] += block.left[Int(p - block.start)]
                r[Int(p - position)] += block.right[Int(p - block.start)]
            }
        }
    }

    mutating func discard(before position: Int64) {
        while let first = blocks.first, first.end <= position { blocks.removeFirst() }
        guard !blocks.isEmpty, blocks[0].start < position else { return }
        let n = Int(position - blocks[0].start)
        blocks[0].left.removeFirst(n)
        blocks[0].right.removeFirst(n)
        blocks[0].start = position
    }

    /// Samples held (what the buffer costs).
    var heldSamples: Int { blocks.reduce(0) { $0 + $1.left.count } }
}
