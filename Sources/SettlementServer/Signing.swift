import CampusCard
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import SettlementCore

/// The admin clients' secrets, by name. Loaded from `--admin-key-file`: one `NAME:HEX` line per client (HEX at
/// least 32 hex digits, i.e. 16 bytes); blank lines and lines starting with `#` are skipped.
public struct AdminCredentials: Sendable {
    var secrets: [String: [UInt8]]

    public init(_ secrets: [String: [UInt8]]) { self.secrets = secrets }

    /// Parses the file's text; throws a one-line `SettlementError` naming the bad line (never its content).
    public init(parsing text: String) throws {
        var secrets: [String: [UInt8]] = [:]
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let parts = line.split(separator: ":", maxSplits: 1).map(String.init)
            guard parts.count == 2, case .admin = RequestSigning.Key(header: "admin:" + parts[0]),
                  let secret = Hex.bytes(parts[1]), secret.count >= 16 else {
                throw SettlementError(.badRequest, "admin key file line \(index + 1) is not NAME:HEX (NAME of [A-Za-z0-9_-], HEX at least 32 hex digits): fix the line")
            }
            // A name twice would leave one of two secrets working, unseen: the file must say which keys sign.
            guard secrets.updateValue(secret, forKey: parts[0]) == nil else {
                throw SettlementError(.badRequest, "admin key file line \(index + 1) names \(parts[0]) again: give each key one line")
            }
        }
        guard !secrets.isEmpty else {
            throw SettlementError(.badRequest, "the admin key file holds no NAME:HEX line: add one (e.g. office:$(openssl rand -hex 32))")
        }
        self.secrets = secrets
    }

    /// Reads `path`, refusing a file other users can read (checked on the open descriptor, so it is the file read).
    public init(contentsOf path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw SettlementError(.badRequest, "cannot open the admin key file \(path) (errno \(errno)): check the path and its permissions")
        }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0 else {
            throw SettlementError(.badRequest, "cannot stat the admin key file \(path) (errno \(errno))")
        }
        guard status.st_mode & S_IFMT == S_IFREG else {
            throw SettlementError(.badRequest, "the admin key file \(path) is not a regular file")
        }
        guard status.st_mode & 0o077 == 0 else {
            throw SettlementError(.badRequest, "the admin key file \(path) is open to its group or other users (mode \(String(status.st_mode & 0o777, radix: 8))): chmod 600 it")
        }
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count < 0 {
                if errno == EINTR { continue }
                throw SettlementError(.badRequest, "cannot read the admin key file \(path) (errno \(errno))")
            }
            if count == 0 { break }
            data.append(contentsOf: buffer[0..<count])
            guard data.count <= 65_536 else { throw SettlementError(.badRequest, "the admin key file \(path) is larger than 64 KiB") }
        }
        try self.init(parsing: String(decoding: data, as: UTF8.self))
    }
}

/// Hex text to bytes and back.
enum Hex {
    static func bytes(_ text: String) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        var index = 0
        while index < digits.count {
            guard let high = value(digits[index]), let low = value(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }

    static func string(_ bytes: [UInt8]) -> String {
        let table = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            out.append(table[Int(byte >> 4)])
            out.append(table[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func isDigit(_ byte: UInt8) -> Bool { value(byte) != nil }

    private static func value(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// Checks the signing headers (form, timestamp window, a known key) before a byte of the body is read; reads the body
/// under the cap and inside the shared body budget; then checks the request's signature (RequestSigning), the
/// caller's kind against the endpoint (admin endpoints take admin keys only, terminal endpoints terminal keys only)
/// and the nonce's novelty. A refused request writes nothing: the nonce is remembered only once everything else passed.
struct SigningMiddleware: RouterMiddleware {
    typealias Context = SettlementRequestContext

    let store: any SettlementStore
    let admins: AdminCredentials
    let bodies: BodyBudget
    let bodyDeadline: Duration
    let now: @Sendable () -> Date

    /// The endpoints nobody signs.
    static func isUnsigned(method: HTTPRequest.Method, path: String) -> Bool {
        method == .get && path == "/v1/time"
    }

    /// By segments, as the router matches them (it skips empty ones: `//v1/admin/…` is an admin route too).
    /// `MethodMiddleware` refuses such paths before this runs; this holds even without it.
    static func isAdmin(path: String) -> Bool {
        let segments = path.split(separator: "/")
        return segments.count >= 2 && segments[0] == "v1" && segments[1] == "admin"
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        // The cap comes first: a declared length over it is refused before a byte of the body is read.
        let declared = request.headers[.contentLength].flatMap { Int($0) }
        if let declared, declared > SettlementLimits.maxBodyBytes {
            throw APIError.tooLarge(limit: SettlementLimits.maxBodyBytes)
        }
        let path = request.uri.path
        let unsigned = Self.isUnsigned(method: request.method, path: path)
        // Only POSTs carry a body here: another method's is refused before a byte of it is read.
        let hasBody = (declared ?? 0) > 0 || request.headers[.transferEncoding] != nil
        if request.method != .post, hasBody {
            throw APIError.badRequest("\(request.method.rawValue) takes no body: send the request without one")
        }

        // The headers before the body: a request that cannot be valid (no or malformed signing headers, a stale
        // timestamp, an unknown key) is refused without reading its body.
        let headers = request.headers
        var terminalInfo: TerminalInfo?
        var signed: (request: RequestSigning.Signed, secret: [UInt8])?
        if !unsigned {
            do {
                let request = try RequestSigning.signed(header: { name in HTTPField.Name(name).flatMap { headers[$0] } }, now: now())
                let secret: [UInt8]?
                switch request.key {
                case let .terminal(id):
                    terminalInfo = try await store.terminal(TerminalID(id))
                    secret = terminalInfo?.secret
                case let .admin(name):
                    secret = admins.secrets[name]
                }
                guard let secret else { throw RequestSigning.Refusal.badSignature }
                signed = (request, secret)
            } catch let refusal as RequestSigning.Refusal {
                throw APIError.unauthorized(refusal.description)
            }
        }

        guard let signed else { return try await next(request, context) }
        if hasBody {
            // The body, inside the budget the requests' bodies share and the caller's share of it, held until the
            // answer; it must arrive within the deadline.
            let caller = "\(signed.request.key)"
            let reserved = min(declared ?? SettlementLimits.maxBodyBytes, SettlementLimits.maxBodyBytes)
            guard bodies.take(reserved, for: caller) else {
                throw APIError(.serviceUnavailable, code: "busy",
                               "settlementd holds as many request bodies as it takes at once (from \(caller) or from all callers): retry in a few seconds")
            }
            defer { bodies.give(reserved, for: caller) }
            context.body = try await Self.collect(request, within: bodyDeadline)
            return try await checked(request, context: context, signed: signed, terminalInfo: terminalInfo, next: next)
        }
        return try await checked(request, context: context, signed: signed, terminalInfo: terminalInfo, next: next)
    }

    /// The body whole, under the cap, within `deadline` (a 408 past it).
    static func collect(_ request: Request, within deadline: Duration) async throws -> ByteBuffer {
        try await withThrowingTaskGroup(of: ByteBuffer?.self) { group in
            group.addTask {
                var request = request
                do {
                    return try await request.collectBody(upTo: SettlementLimits.maxBodyBytes)
                } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
                    throw APIError.tooLarge(limit: SettlementLimits.maxBodyBytes)
                } catch is CancellationError {
                    throw CancellationError()
                } catch {
                    // The client went away mid-body: its fault, not the server's (logged as a 400, not a 500).
                    throw APIError.badRequest("the request ended before its body was whole: send it again")
                }
            }
            group.addTask {
                try await Task.sleep(for: deadline)
                return nil
            }
            defer { group.cancelAll() }
            guard let body = try await group.next() ?? nil else {
                throw APIError(.requestTimeout, code: "timeout",
                               "the request's body did not arrive whole within \(deadline.components.seconds) s: send it at once, as the terminals do")
            }
            return body
        }
    }

    /// The signature over the body, the caller's kind, the nonce; then the route.
    private func checked(_ request: Request, context: Context, signed: (request: RequestSigning.Signed, secret: [UInt8]),
                         terminalInfo: TerminalInfo?, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        let path = request.uri.path
        do {
            try signed.request.check(secret: signed.secret, method: request.method.rawValue, pathAndQuery: request.head.path ?? path,
                                     body: context.body.readableBytesView)
        } catch let refusal as RequestSigning.Refusal {
            throw APIError.unauthorized(refusal.description)
        }
        let verified = (key: signed.request.key, nonce: signed.request.nonce)
        switch (verified.key, Self.isAdmin(path: path)) {
        case (.terminal, true):
            throw APIError.forbidden("admin endpoints refuse terminal keys: sign with an admin key (settlementd --admin-key-file)")
        case (.admin, false):
            throw APIError.forbidden("terminal endpoints refuse admin keys: sign with the terminal's own key")
        case let (.terminal(id), false):
            if terminalInfo?.enabled != true {
                throw APIError.unauthorized("terminal \(id) is disabled: an operator must enable it (POST /v1/admin/terminals/\(id)/enable)")
            }
        case (.admin, true):
            break
        }
        let nonceOwner: TerminalID = if case let .terminal(id) = verified.key { TerminalID(id) } else { .none }
        guard try await store.rememberNonce(terminal: nonceOwner, nonce: verified.nonce, at: now()) else {
            throw APIError.unauthorized("the request's nonce was used before (a replay): sign every request with a fresh nonce")
        }
        context.caller = verified.key
        context.loggedCaller.withLockedValue { $0 = verified.key }
        context.isLoadStation = terminalInfo?.loads == true
        context.logger[metadataKey: "caller"] = "\(verified.key)"
        return try await next(request, context)
    }
}
