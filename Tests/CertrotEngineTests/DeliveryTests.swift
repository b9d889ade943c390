import CertrotServer
import CertrotTestSupport
import Logging
import Testing

/// The delivery window alone: order, the in-flight bound, replies first, and when a bundle counts as sent.
@Suite struct DeliveryTests {
    let publisher = EngineHarness.RecordingPublisher()
    let delivery = Delivery(maxInflight: 2, logger: Logger(label: "test"))

    func part(_ jti: String, _ n: Int) -> Outbound {
        Outbound(topic: "d/certs", payload: Array("\(jti)-\(n)".utf8), kind: .part(jti: jti))
    }

    var topics: [String] { publisher.published.map { String(decoding: $0.payload, as: UTF8.self) } }

    @Test func repliesFirst_onTheirOwnConnection_thenTheBacklog_withinTheWindow() {
        for n in 1...3 { delivery.enqueue(part("a", n)) }
        delivery.enqueue(Outbound(topic: "certrot/replies/x", payload: Array("reply".utf8), kind: .other, urgent: true))
        var replies: [String] = []
        let rpc: (Outbound) -> Bool = { item in
            replies.append(String(decoding: item.payload, as: UTF8.self))
            return true
        }
        delivery.flush(client: publisher, replies: rpc)
        #expect(replies == ["reply"])
        #expect(topics == ["a-1", "a-2"], "a window of 2")
        #expect(delivery.queued == 1 && delivery.inFlight == 2)
        let mids = publisher.published.map(\.mid)
        #expect(delivery.published(mid: mids[0], reasonCode: 0) == nil)
        delivery.flush(client: publisher, replies: rpc)
        #expect(topics == ["a-1", "a-2", "a-3"])
        #expect(delivery.published(mid: mids[1], reasonCode: 0) == nil)
        #expect(delivery.published(mid: publisher.published[2].mid, reasonCode: 0) == "a", "the last part of a")
        #expect(delivery.published(mid: publisher.published[2].mid, reasonCode: 0) == nil, "a PUBACK counts once")
    }

    @Test func withoutAnRPCConnection_aReplyGoesFirst_andTakesASlotOfTheWindow() {
        for n in 1...2 { delivery.enqueue(part("a", n)) }
        delivery.enqueue(Outbound(topic: "certrot/replies/x", payload: Array("reply".utf8), kind: .other, urgent: true))
        delivery.flush(client: publisher)
        #expect(topics == ["reply", "a-1"])
        #expect(delivery.published(mid: publisher.published[0].mid, reasonCode: 0) == nil, "a reply is not a part")
        delivery.flush(client: publisher)
        #expect(topics == ["reply", "a-1", "a-2"])
    }

    @Test func aRefusedPart_doesNotCountTheBundleSent() {
        delivery.enqueue(part("b", 1))
        delivery.flush(client: publisher)
        #expect(delivery.published(mid: publisher.published[0].mid, reasonCode: 0x87) == nil)
        #expect(delivery.inFlight == 0, "the window opens again")
    }

    @Test func aResentPart_isNotAFirstTransmission() {
        delivery.enqueue(Outbound(topic: "d/certs", payload: [1], kind: .other))
        delivery.enqueue(part("c", 1))
        delivery.flush(client: publisher)
        #expect(delivery.published(mid: publisher.published[0].mid, reasonCode: 0) == nil)
        #expect(delivery.published(mid: publisher.published[1].mid, reasonCode: 0) == "c")
    }
}
