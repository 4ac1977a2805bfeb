import Foundation
import SettlementCore
import TestSupport
import Testing
@testable import SettlementServer

/// The repository's root, from this file's path.
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// `METHOD /path/{param}` for every operation under `paths:` in the spec (read line by line: two-space indented
/// paths, four-space indented methods).
func specOperations() throws -> Set<String> {
    let text = try String(contentsOf: packageRoot.appendingPathComponent("docs/settlement-api.yaml"), encoding: .utf8)
    var operations: Set<String> = []
    var inPaths = false
    var path: String?
    for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
        if line == "paths:" { inPaths = true; continue }
        guard inPaths else { continue }
        if !line.isEmpty, !line.hasPrefix(" ") { break }
        if line.hasPrefix("  /"), line.hasSuffix(":") {
            path = String(line.dropFirst(2).dropLast())
        } else if let path, line.hasPrefix("    "), !line.hasPrefix("     "), line.hasSuffix(":") {
            let method = line.trimmingCharacters(in: .whitespaces).dropLast()
            if ["get", "post", "put", "patch", "delete"].contains(method) { operations.insert("\(method.uppercased()) \(path)") }
        }
    }
    return operations
}

/// `:name` and `{name}` both as `{}`.
func normalised(_ route: String) -> String {
    route.split(separator: "/", omittingEmptySubsequences: false).map { part in
        part.hasPrefix(":") || (part.hasPrefix("{") && part.hasSuffix("}")) ? "{}" : String(part)
    }.joined(separator: "/")
}

@Suite("the spec and the router")
struct SpecTests {
    @Test("the spec's paths and methods are exactly the router's routes")
    func specMatchesRouter() async throws {
        let spec = Set(try specOperations().map(normalised))
        #expect(spec.count >= 22)
        let router = SettlementServer(store: MemoryStore(), admins: AdminCredentials([adminName: adminSecret])).router()
        let routes = Set(router.routes.map { normalised("\($0.method.rawValue) \($0.path.description.hasPrefix("/") ? "" : "/")\($0.path)") })
        #expect(spec.subtracting(routes).isEmpty, "in the spec, not served: \(spec.subtracting(routes).sorted())")
        #expect(routes.subtracting(spec).isEmpty, "served, not in the spec: \(routes.subtracting(spec).sorted())")
    }

    @Test("the spec is YAML an OpenAPI tool reads, with the same operations the line reader finds")
    func specIsValidYAML() throws {
        // PyYAML, as schemathesis and the generators read it: an unquoted summary with ": " in it is not YAML.
        let script = """
            import sys, yaml
            spec = yaml.safe_load(open(sys.argv[1]))
            assert spec["openapi"].startswith("3.1"), spec["openapi"]
            for path, item in sorted(spec["paths"].items()):
                for method in item:
                    if method in ("get", "post", "put", "patch", "delete"):
                        print(method.upper(), path)
            """
        let result = TestSupport.run("/usr/bin/python3", ["-c", script, packageRoot.appendingPathComponent("docs/settlement-api.yaml").path])
        #expect(result.status == 0, "\(result.stderr)")
        let operations = Set(result.stdout.split(separator: "\n").map(String.init))
        #expect(operations == (try specOperations()))
    }

    @Test("the admin key file: NAME:HEX lines; a file other users can read is refused")
    func adminKeyFile() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("settle-admin-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("admin.keys").path
        let secretHex = String(repeating: "ab", count: 32)
        try Data("# the office\noffice:\(secretHex)\n\n".utf8).write(to: URL(fileURLWithPath: path))
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: path)
        #expect(throws: SettlementError.self) { try AdminCredentials(contentsOf: path) }
        do {
            _ = try AdminCredentials(contentsOf: path)
        } catch let error as SettlementError {
            #expect(error.message.contains("chmod 600"))
            #expect(!error.message.contains(secretHex))
        }
        // Its group may not read it either (a group that can read admin secrets can sign as the office).
        try FileManager.default.setAttributes([.posixPermissions: 0o640], ofItemAtPath: path)
        #expect(throws: SettlementError.self) { try AdminCredentials(contentsOf: path) }
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
        let credentials = try AdminCredentials(contentsOf: path)
        #expect(credentials.secrets["office"] == Array(repeating: 0xab, count: 32))
        let twice = "office:\(secretHex)\naudit:\(secretHex)\noffice:\(String(repeating: "cd", count: 32))"
        #expect(throws: SettlementError.self) { try AdminCredentials(parsing: twice) }
        do { _ = try AdminCredentials(parsing: twice) } catch let error as SettlementError {
            #expect(error.message == "admin key file line 3 names office again: give each key one line", "\(error.message)")
        }
        for bad in ["office", "office:abc", "of fice:\(secretHex)", "office:\(String(repeating: "zz", count: 32))", "# nothing"] {
            #expect(throws: SettlementError.self, "\(bad)") { try AdminCredentials(parsing: bad) }
            do { _ = try AdminCredentials(parsing: bad) } catch let error as SettlementError {
                #expect(!error.message.contains(secretHex))
            }
        }
    }
}

/// The upload's answer is written by hand; it must be what `jsonResponse` (JSONEncoder, sorted keys) would send.
@Suite struct UploadAnswerJSONTests {
    @Test func theAnswerIsWhatJSONEncoderWrites() throws {
        let at = Date(timeIntervalSince1970: 1_764_460_800)
        let acks = [
            RecordAck(terminalSequence: 0, status: .accepted, booking: .booked, flags: [], receivedAt: at),
            RecordAck(terminalSequence: UInt32.max, status: .duplicate, booking: .pending, flags: ["counter-gap", "amount-mismatch"],
                      receivedAt: at.addingTimeInterval(0.9)),
            RecordAck(terminalSequence: 7, status: .conflict, booking: .flagged, flags: ["odd \"flag\"\n\\"], receivedAt: at),
        ]
        let answer = WireUploadResponse(acks: acks.map(WireAck.init), serverTime: 1_764_460_801)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        #expect(answer.json == [UInt8](try encoder.encode(answer)))
        let empty = WireUploadResponse(acks: [], serverTime: 0)
        #expect(empty.json == Array(#"{"acks":[],"serverTime":0}"#.utf8))
    }
}
