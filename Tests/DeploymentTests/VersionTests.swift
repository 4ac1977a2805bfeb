import BuildInfo
import Foundation
import Testing
import TestSupport

@Suite struct VersionTests {
    /// What the build plugin should have written: `git rev-parse HEAD`, `-dirty` when tracked files differ from HEAD
    /// now, `unknown` outside a git checkout.
    static func expectedCommit() -> String {
        guard let git = tool("git") else { return "unknown" }
        let head = run(git, ["-C", packageRoot.path, "rev-parse", "--verify", "-q", "HEAD"])
        guard head.status == 0 else { return "unknown" }
        let status = run(git, ["-C", packageRoot.path, "status", "--porcelain", "--untracked-files=no"])
        let dirty = !status.stdout.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
        return head.stdout.trimmingCharacters(in: .whitespacesAndNewlines) + (dirty ? "-dirty" : "")
    }

    @Test(arguments: ["cardctl", "cardemu", "cardbench", "cardd"])
    func versionNamesTheCommitTheBinaryWasBuiltFrom(executable: String) throws {
        let result = run(try BuiltExecutable.path(executable), ["--version"])
        #expect(result.status == 0, "\(result.stderr)")
        let expected = "\(BuildInfo.version) (commit \(Self.expectedCommit()))"
        #expect(result.stdout.trimmingCharacters(in: .newlines) == expected,
                "the binary is older than the tree (a commit or an edit since the build): `swift build` refreshes it")
    }

    @Test func theLibraryAgreesWithTheBinaries() {
        #expect(BuildInfo.commit == Self.expectedCommit())
        #expect(BuildInfo.version.split(separator: ".").count == 3)
        #expect(BuildInfo.commit == "unknown" || BuildInfo.commit.range(of: "^[0-9a-f]{40}(-dirty)?$", options: .regularExpression) != nil)
    }
}

/// scripts/build-info-commit, the generator BuildInfoPlugin runs, on throw-away git repositories.
@Suite(.enabled(if: tool("git") != nil, "git is not installed: run scripts/bootstrap"))
struct BuildInfoGeneratorTests {
    static let script = packageRoot.appendingPathComponent("scripts/build-info-commit").path

    static func generate(_ package: String, into file: String) throws -> String {
        let result = run("/bin/sh", [script, package, file])
        try #require(result.status == 0, "\(result.stderr)")
        let text = try String(contentsOfFile: file, encoding: .utf8)
        return try #require(text.firstMatch(of: /public static let commit = "([^"]*)"/)).output.1.description
    }

    @Test func commitDirtyAndUnknown() throws {
        let git = try #require(tool("git"))
        let directory = try TemporaryDirectory("onecard-buildinfo")
        defer { directory.remove() }
        let repository = directory.path + "/repo"
        let output = directory.path + "/out/BuildInfo+Commit.swift"
        try FileManager.default.createDirectory(atPath: repository, withIntermediateDirectories: true)

        #expect(try Self.generate(repository, into: output) == "unknown")  // not a git checkout

        func git_(_ arguments: String...) throws -> String {
            let result = run(git, ["-C", repository, "-c", "user.name=test", "-c", "user.email=test@example.invalid"] + arguments)
            try #require(result.status == 0, "git \(arguments): \(result.stderr)")
            return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        _ = try git_("init", "-q")
        try Data("one\n".utf8).write(to: URL(fileURLWithPath: repository + "/tracked.swift"))
        _ = try git_("add", "tracked.swift")
        _ = try git_("commit", "-q", "-m", "one")
        let first = try git_("rev-parse", "HEAD")
        #expect(try Self.generate(repository, into: output) == first)

        // Unchanged: the file is not rewritten (nothing downstream recompiles).
        let before = try FileManager.default.attributesOfItem(atPath: output)[.modificationDate] as? Date
        Thread.sleep(forTimeInterval: 0.05)
        #expect(try Self.generate(repository, into: output) == first)
        #expect(try FileManager.default.attributesOfItem(atPath: output)[.modificationDate] as? Date == before)

        try Data("untracked\n".utf8).write(to: URL(fileURLWithPath: repository + "/new.swift"))
        #expect(try Self.generate(repository, into: output) == first, "untracked files do not make it dirty")
        try Data("two\n".utf8).write(to: URL(fileURLWithPath: repository + "/tracked.swift"))
        #expect(try Self.generate(repository, into: output) == first + "-dirty")
        _ = try git_("commit", "-q", "-am", "two")
        let second = try git_("rev-parse", "HEAD")
        #expect(second != first)
        #expect(try Self.generate(repository, into: output) == second)
    }
}
