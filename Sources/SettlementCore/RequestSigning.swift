import Crypto
import Foundation

/// How terminals (and admin clients) sign requests to the settlement service: HMAC-SHA256 with the caller's own
/// secret over the method, the path with its query, a timestamp, a nonce and the body's SHA-256. The service accepts
/// a signature only inside `RequestSigning.window` of its own clock and only once per nonce (a replay is refused).
///
/// Headers: `X-OneCard-Key` (`terminal:12` or `admin:NAME`), `X-OneCard-Timestamp` (Unix seconds),
/// `X-OneCard-Nonce` (16–64 characters of [0-9a-zA-Z_-]), `X-OneCard-Signature` (`v1=` and 64 hex digits).
public enum RequestSigning {
    public static let keyHeader = "X-OneCard-Key"
    public static let timestampHeader = "X-OneCard-Timestamp"
    public static let nonceHeader = "X-OneCard-Nonce"
    public static let signatureHeader = "X-OneCard-Signature"
    /// How far a request's timestamp may be from the service's clock, either way (seconds).
    public static let window: Int64 = 300
    /// How long a store remembers a nonce: a request stamped `window` ahead of the server's clock is accepted until
    /// `window` after its stamp, 2 × window after it was first seen; a minute more covers the whole seconds the
    /// stamps are written in (at exactly 2 × window a replay signed a window ahead got through).
    public static let nonceRetention = TimeInterval(2 * window + 60)

    /// Who signs: a terminal by its id, or an admin client by its name.
    public enum Key: Sendable, Hashable, CustomStringConvertible {
        case terminal(UInt16)
        case admin(String)

        public init?(header: String) {
            // One spelling per key: digits only, no sign, no leading zero (`terminal:02` is not `terminal:2`).
            let digits = header.dropFirst(9)
            if header.hasPrefix("terminal:"), digits.allSatisfy({ ("0"..."9").contains($0) }), digits.first != "0", let id = UInt16(digits), id > 0 {
                self = .terminal(id)
            } else if header.hasPrefix("admin:") {
                let name = header.dropFirst(6)
                guard (1...64).contains(name.count), name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else { return nil }
                self = .admin(String(name))
            } else {
                return nil
            }
        }

        public var description: String {
            switch self {
            case let .terminal(id): "terminal:\(id)"
            case let .admin(name): "admin:\(name)"
            }
        }
    }

    /// The text that is signed.
    public static func canonical(method: String, pathAndQuery: String, timestamp: Int64, nonce: String, body: some DataProtocol) -> String {
        let bodyDigest = SHA256.hash(data: body).map { String(format: "%02x", $0) }.joined()
        return ["ONECARD-HMAC-SHA256", method.uppercased(), pathAndQuery, "\(timestamp)", nonce, bodyDigest].joined(separator: "\n")
    }

    /// `v1=` and the hex HMAC-SHA256 of the canonical text under `secret`.
    public static func signature(secret: [UInt8], method: String, pathAndQuery: String, timestamp: Int64, nonce: String,
                                 body: some DataProtocol) -> String {
        let text = canonical(method: method, pathAndQuery: pathAndQuery, timestamp: timestamp, nonce: nonce, body: body)
        let mac = HMAC<SHA256>.authenticationCode(for: Data(text.utf8), using: SymmetricKey(data: secret))
        return "v1=" + mac.map { String(format: "%02x", $0) }.joined()
    }

    /// The four headers for a request (a fresh random nonce each time).
    public static func headers(key: Key, secret: [UInt8], method: String, pathAndQuery: String, body: some DataProtocol,
                               now: Date = Date()) -> [(String, String)] {
        let timestamp = Int64(now.timeIntervalSince1970)
        let nonce = (0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        return [
            (keyHeader, key.description),
            (timestampHeader, "\(timestamp)"),
            (nonceHeader, nonce),
            (signatureHeader, signature(secret: secret, method: method, pathAndQuery: pathAndQuery, timestamp: timestamp, nonce: nonce, body: body)),
        ]
    }

    /// Why a request's signature is refused (each is a 401 with this message; nothing is written).
    public enum Refusal: Error, Sendable, Hashable, CustomStringConvertible {
        case missingHeader(String)
        case malformed(String)
        case staleTimestamp(skew: Int64)
        case badSignature

        public var description: String {
            switch self {
            case let .missingHeader(name): "the request has no \(name) header: sign every request (docs/settlement-api.yaml, Authentication)"
            case let .malformed(what): "the request's \(what) is malformed: see docs/settlement-api.yaml, Authentication"
            case let .staleTimestamp(skew): "the request's timestamp is \(skew) s from the server's clock (window ±\(RequestSigning.window) s): set the terminal's clock from GET /v1/time and resend"
            case .badSignature: "the request's signature does not match: check the key and secret, then resend"
            }
        }
    }

    /// A request's signing headers, checked for form and freshness (not yet against the body: `check`).
    public struct Signed: Sendable {
        public var key: Key
        public var timestamp: Int64
        public var nonce: String
        var signature: String

        /// Checks the signature over the request under the caller's `secret`; throws `Refusal.badSignature`.
        public func check(secret: [UInt8], method: String, pathAndQuery: String, body: some DataProtocol) throws {
            let expected = RequestSigning.signature(secret: secret, method: method, pathAndQuery: pathAndQuery, timestamp: timestamp,
                                                    nonce: nonce, body: body)
            // Constant time over the whole string.
            var difference: UInt8 = 0
            for (a, b) in zip(Array(expected.utf8), Array(signature.lowercased().utf8)) { difference |= a ^ b }
            guard difference == 0 else { throw Refusal.badSignature }
        }
    }

    /// Reads and checks a request's signing headers: present, well formed, the timestamp inside the window. A
    /// server runs this before it reads the body, so a request that cannot be valid is refused without buffering it.
    public static func signed(header: (String) -> String?, now: Date) throws -> Signed {
        func required(_ name: String) throws -> String {
            guard let value = header(name) else { throw Refusal.missingHeader(name) }
            return value
        }
        guard let key = Key(header: try required(keyHeader)) else { throw Refusal.malformed("key") }
        guard let timestamp = Int64(try required(timestampHeader)) else { throw Refusal.malformed("timestamp") }
        let nonce = try required(nonceHeader)
        guard (16...64).contains(nonce.count), nonce.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else {
            throw Refusal.malformed("nonce")
        }
        let given = try required(signatureHeader)
        guard given.hasPrefix("v1="), given.count == 67 else { throw Refusal.malformed("signature") }
        // Near Int64's ends the difference overflows (a trap that took the whole service down, unsigned): such a
        // timestamp is as stale as any other outside the window.
        let (skew, overflow) = timestamp.subtractingReportingOverflow(Int64(now.timeIntervalSince1970))
        guard !overflow, (-window...window).contains(skew) else {
            throw Refusal.staleTimestamp(skew: overflow ? (timestamp < 0 ? .min : .max) : skew)
        }
        return Signed(key: key, timestamp: timestamp, nonce: nonce, signature: given)
    }
}
