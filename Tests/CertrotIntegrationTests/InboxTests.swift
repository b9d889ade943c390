import CertrotMQTT
import Foundation
import Synchronization
import Testing

@testable import CertrotServer

@Suite struct InboxTests {
    final class Flag: Sendable {
        private let value = Mutex(false)
        func set() { value.withLock { $0 = true } }
        var isSet: Bool { value.withLock { $0 } }
    }

    struct Item: Sendable, Equatable {
        var key: String?
        var value: Int
        var size = 10
    }

    func inbox(maxBytes: Int = .max) -> Inbox<Item> {
        Inbox<Item>(maxBytes: maxBytes, key: { $0.key.map { Array($0.utf8) } }, size: \.size)
    }

    @Test func itemsWithTheSameKey_collapseToTheNewest_inItsPlaceAtTheEnd() async {
        let queue = inbox()
        queue.push(Item(key: "a", value: 1))
        queue.push(Item(key: nil, value: 2))
        queue.push(Item(key: "a", value: 3))
        queue.push(Item(key: "b", value: 4))
        let batch = await queue.next(limit: 100)
        #expect(batch?.map(\.value) == [2, 3, 4])
        #expect(queue.bytes == 0)
        // Once taken, a key starts afresh.
        queue.push(Item(key: "a", value: 5))
        #expect(await queue.next(limit: 100)?.map(\.value) == [5])
    }

    @Test func aReplacedItem_isMergedIntoTheNewerOne() async {
        let queue = Inbox<Item>(
            key: { $0.key.map { Array($0.utf8) } }, size: \.size,
            merge: { replaced, newer in Item(key: newer.key, value: replaced.value * 10 + newer.value) })
        queue.push(Item(key: "a", value: 1))
        queue.push(Item(key: "a", value: 2))
        queue.push(Item(key: "b", value: 3))
        #expect(await queue.next(limit: 100)?.map(\.value) == [12, 3])
    }

    /// A device's live inventory replaced by the retained copy a replica gets on resubscribing stays live: the
    /// device was online, and that is what tells the engine it is back without its bundle.
    @Test func aLiveInventoryReplacedByARetainedCopy_staysLive() {
        func inventory(retained: Bool) -> EngineInput {
            EngineInput.from(
                .message(
                    MQTTMessage(
                        topic: "d1/certs/inventory", payload: Array(#"{"v":1,"seq":0,"creds":[]}"#.utf8),
                        retained: retained)))
        }
        func retained(_ input: EngineInput) -> Bool? {
            guard case .inventory(let message, .success) = input else { return nil }
            return message.retained
        }
        #expect(
            retained(EngineInput.merge(replaced: inventory(retained: false), newer: inventory(retained: true))) == false
        )
        #expect(
            retained(EngineInput.merge(replaced: inventory(retained: true), newer: inventory(retained: true))) == true)
        #expect(
            retained(EngineInput.merge(replaced: inventory(retained: true), newer: inventory(retained: false))) == false
        )
    }

    @Test func aPushOverTheByteBound_waitsUntilTheConsumerMakesRoom() async throws {
        let queue = inbox(maxBytes: 25)
        queue.push(Item(key: nil, value: 1))
        queue.push(Item(key: nil, value: 2))
        let pushed = Flag()
        let thread = Thread {
            queue.push(Item(key: nil, value: 3))  // 30 bytes > 25: waits
            pushed.set()
        }
        thread.start()
        try await Task.sleep(for: .milliseconds(200))
        #expect(!pushed.isSet)
        #expect(queue.bytes == 20)
        #expect(await queue.next(limit: 1)?.map(\.value) == [1])
        for _ in 0..<100 where !pushed.isSet {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(pushed.isSet)
        #expect(await queue.next(limit: 10)?.map(\.value) == [2, 3])
    }

    @Test func urgentItems_neverWait_andGoFirst() async {
        let queue = inbox(maxBytes: 15)
        queue.push(Item(key: nil, value: 1))
        queue.pushUrgent(Item(key: nil, value: 0, size: 1000))
        #expect(await queue.next(limit: 10)?.map(\.value) == [0, 1])
    }

    @Test func finishing_releasesAWaitingProducer() async throws {
        let queue = inbox(maxBytes: 15)
        queue.push(Item(key: nil, value: 1))
        let done = Flag()
        let thread = Thread {
            queue.push(Item(key: nil, value: 2))
            done.set()
        }
        thread.start()
        try await Task.sleep(for: .milliseconds(100))
        queue.finish()
        for _ in 0..<100 where !done.isSet { try await Task.sleep(for: .milliseconds(20)) }
        #expect(done.isSet)
    }
}
