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

    @Test(arguments: ["cardctl", "cardemu", "cardbench"])
    func versionNamesTheCommitTheBinaryWasBuiltFrom(executable: String) throws {
        let result = run(try BuiltExecutable.path(executable), ["--version"])
        #expect(result.status == 0, "\(result.stderr)")
        let expected = "\(BuildInfo.version) (commit \(Self.expectedCommit()))"
        // A mismatch after editing files means the binary is older than the tree: `swift build` refreshes it.
        #expect(result.stdout.trimmingCharacters(in: .newlines) == expected)
    }

    @Test func theLibraryAgreesWithTheBinaries() {
        #expect(BuildInfo.commit == Self.expectedCommit())
        #expect(BuildInfo.version.split(separator: ".").count == 3)
        #expect(BuildInfo.commit == "unknown" || BuildInfo.commit.range(of: "^[0-9a-f]{40}(-dirty)?$", options: .regularExpression) != nil)
    }
}
