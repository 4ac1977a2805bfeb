import Foundation
import SettlementCore

/// Reads the usual shape of the service's answer to an upload: `{"acks": [{…}, …], "serverTime": N}` with each
/// acknowledgement's five fields once each, in any order, as `WireJSONReader` reads them (what settlementd writes:
/// `WireUploadResponse`). A terminal reads one per batch: through `JSONDecoder` a 500-record answer cost ~5 ms of the
/// box's CPU.
///
/// It decides nothing itself: anything else makes it answer `nil`, and the answer goes through
/// `SettlementJSON.decoder()` as before (which reads it, or names what is wrong with it). The tests hold it to that:
/// whatever it accepts, `JSONDecoder` decodes to the same acknowledgements.
enum AnswerReader {
    static func acks(_ data: Data) -> [RecordAck]? {
        data.withUnsafeBytes { bytes in
            var json = WireJSONReader(bytes)
            guard json.take(UInt8(ascii: "{")) else { return nil }
            var acks: [RecordAck]?
            var serverTime: Int64?
            repeat {
                switch json.key() {
                case "acks" where acks == nil:
                    guard json.take(UInt8(ascii: "[")) else { return nil }
                    var list: [RecordAck] = []
                    if !json.take(UInt8(ascii: "]")) {
                        repeat {
                            guard let ack = ack(&json) else { return nil }
                            list.append(ack)
                        } while json.take(UInt8(ascii: ","))
                        guard json.take(UInt8(ascii: "]")) else { return nil }
                    }
                    acks = list
                case "serverTime" where serverTime == nil:
                    guard let time = json.integer() else { return nil }
                    serverTime = time
                default:
                    return nil
                }
            } while json.take(UInt8(ascii: ","))
            guard json.take(UInt8(ascii: "}")), json.atEnd() else { return nil }
            return acks
        }
    }

    private static func ack(_ json: inout WireJSONReader) -> RecordAck? {
        guard json.take(UInt8(ascii: "{")) else { return nil }
        var sequence: UInt32?
        var status: RecordAck.Status?
        var booking: RecordAck.Booking?
        var flags: [String]?
        var received: Date?
        repeat {
            switch json.key() {
            case "terminalSequence" where sequence == nil:
                guard let value = json.integer(), let exact = UInt32(exactly: value) else { return nil }
                sequence = exact
            case "status" where status == nil:
                guard let value = json.string().flatMap(RecordAck.Status.init(rawValue:)) else { return nil }
                status = value
            case "booking" where booking == nil:
                guard let value = json.string().flatMap(RecordAck.Booking.init(rawValue:)) else { return nil }
                booking = value
            case "flags" where flags == nil:
                guard json.take(UInt8(ascii: "[")) else { return nil }
                var list: [String] = []
                if !json.take(UInt8(ascii: "]")) {
                    repeat {
                        guard let flag = json.string() else { return nil }
                        list.append(flag)
                    } while json.take(UInt8(ascii: ","))
                    guard json.take(UInt8(ascii: "]")) else { return nil }
                }
                flags = list
            case "receivedAt" where received == nil:
                // SettlementJSON's date range: anything else is JSONDecoder's to refuse.
                guard let value = json.integer(), (0...4_102_444_800).contains(value) else { return nil }
                received = Date(timeIntervalSince1970: TimeInterval(value))
            default:
                return nil
            }
        } while json.take(UInt8(ascii: ","))
        guard json.take(UInt8(ascii: "}")), let sequence, let status, let booking, let flags, let received else { return nil }
        return RecordAck(terminalSequence: sequence, status: status, booking: booking, flags: flags, receivedAt: received)
    }
}
