import Foundation
import Synchronization

/// A multi-producer queue drained in batches by one consumer. libmosquitto's network thread and the ticker push;
/// the engine takes everything queued at once and handles it in one store transaction (group commit).
///
/// Bounded, because what arrives is chosen by whoever can publish: an item with a coalescing key (a device's
/// inventory: state, of which only the newest counts) replaces the queued item with the same key, and a push
/// that would take the queued bytes over `maxBytes` waits until the consumer has made room — on the MQTT network
/// thread, so the daemon stops reading from the broker rather than grow (the broker then holds or drops messages
/// by its own limits). Urgent items (ticks, operator requests: rate-limited before they get here) never wait.
final class Inbox<Item: Sendable>: @unchecked Sendable {
    // All state is guarded by `condition` (an NSCondition: producers wait on it for room).
    private struct Entry {
        var item: Item?
        var key: [UInt8]?
        var size: Int
    }

    private let condition = NSCondition()
    /// Queued entries from `head` on; a superseded entry keeps its place with `item` nil. `base` is the absolute
    /// position of `entries[0]`, so that `positions` stays valid when the array is compacted.
    private var entries: [Entry] = []
    private var head = 0
    private var base = 0
    private var positions: [[UInt8]: Int] = [:]
    private var urgent: [Item] = []
    private var queuedBytes = 0
    private var finished = false
    private let maxBytes: Int
    private let key: @Sendable (Item) -> [UInt8]?
    private let size: @Sendable (Item) -> Int
    private let superseded: @Sendable () -> Void
    private let merge: @Sendable (_ replaced: Item, _ newer: Item) -> Item
    private let signal: AsyncStream<Void>.Continuation
    private let stream: AsyncStream<Void>

    /// - Parameters:
    ///   - maxBytes: queued bytes (as `size` counts them) beyond which a push waits.
    ///   - key: items with the same key replace each other in the queue; nil: never replaced.
    ///   - superseded: called for every item replaced by a newer one.
    ///   - merge: what is queued in place of a replaced item and the newer one (default: the newer one).
    init(
        maxBytes: Int = .max, key: @escaping @Sendable (Item) -> [UInt8]? = { _ in nil },
        size: @escaping @Sendable (Item) -> Int = { _ in 0 }, superseded: @escaping @Sendable () -> Void = {},
        merge: @escaping @Sendable (_ replaced: Item, _ newer: Item) -> Item = { $1 }
    ) {
        self.maxBytes = maxBytes
        self.key = key
        self.size = size
        self.superseded = superseded
        self.merge = merge
        (stream, signal) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    func push(_ pushed: Item) {
        var item = pushed
        let itemKey = key(item)
        let itemSize = size(item)
        var replaced = false
        condition.lock()
        if let itemKey, let position = positions[itemKey], position - base >= head {
            queuedBytes -= entries[position - base].size
            if let queued = entries[position - base].item { item = merge(queued, item) }
            entries[position - base] = Entry(item: nil, key: nil, size: 0)
            replaced = true
        }
        while !finished, queuedBytes > 0, queuedBytes + itemSize > maxBytes { condition.wait() }
        if let itemKey { positions[itemKey] = base + entries.count }
        entries.append(Entry(item: item, key: itemKey, size: itemSize))
        queuedBytes += itemSize
        condition.unlock()
        if replaced { superseded() }
        signal.yield()
    }

    /// Queues `item` ahead of everything pushed with ``push(_:)``: ticks and operator requests must not wait
    /// behind a flood of inventories (100,000 retained ones after a restart).
    func pushUrgent(_ item: Item) {
        condition.lock()
        urgent.append(item)
        condition.unlock()
        signal.yield()
    }

    func finish() {
        condition.lock()
        finished = true
        condition.broadcast()
        condition.unlock()
        signal.finish()
    }

    /// Bytes queued now (as `size` counts them).
    var bytes: Int {
        condition.lock()
        defer { condition.unlock() }
        return queuedBytes
    }

    /// Takes up to `limit` queued items, oldest first.
    private func take(limit: Int) -> (batch: [Item], more: Bool) {
        condition.lock()
        defer { condition.unlock() }
        var batch = urgent
        urgent.removeAll(keepingCapacity: true)
        var freed = 0
        while batch.count < limit, head < entries.count {
            let entry = entries[head]
            if let item = entry.item {
                batch.append(item)
                freed += entry.size
                if let key = entry.key, positions[key] == base + head { positions[key] = nil }
            }
            head += 1
        }
        if head == entries.count {
            base += entries.count
            entries.removeAll(keepingCapacity: entries.count <= 65_536)
            head = 0
        } else if head > 65_536, head * 2 > entries.count {
            entries.removeFirst(head)
            base += head
            head = 0
        }
        queuedBytes -= freed
        if freed > 0 { condition.broadcast() }
        return (batch, head < entries.count)
    }

    /// Waits until something is queued and returns all of it (at most `limit`, the rest on the next call);
    /// `nil` once finished and drained.
    func next(limit: Int) async -> [Item]? {
        var iterator = stream.makeAsyncIterator()
        while true {
            let (batch, more) = take(limit: limit)
            if !batch.isEmpty {
                if more { signal.yield() }
                return batch
            }
            guard await iterator.next() != nil else {
                let rest = take(limit: .max).batch
                return rest.isEmpty ? nil : rest
            }
        }
    }
}

/// Messages dropped, by reason. Shown by `fleet.status`; never reset while the daemon runs.
public final class DropCounters: Sendable {
    private let counts = Mutex<[String: Int]>([:])
    private let observability: Observability?

    public init(observability: Observability? = nil) {
        self.observability = observability
    }

    public func count(_ reason: String) {
        counts.withLock { $0[reason, default: 0] += 1 }
        observability?.dropped(reason)
    }

    public var snapshot: [String: Int] { counts.withLock { $0 } }
}
