import CaptureEndpoint
import Foundation
import Logging
import HTTPTypes
import GRDB
import Hummingbird
import XCTest

/// The REST surface, served on a loopback socket (`serve`) from a
/// real SQLite store: shapes the VideoDB SDK reads, authentication, and every
/// kind of bad request answered with the standard error body.
final class SessionAPITests: XCTestCase {
    func testCreateGetAndListWithTheShapesTheSDKReads() async throws {
        let harness = EndpointHarness()
        defer { harness.remove() }
        let (app, _) = try harness.build()
        try await app.serve { client in
            let created = try await client.call(.post, "/collection/default/capture/session",
                json: #"{"end_user_id": "user-1", "callback_url": "http://127.0.0.1:9/hook", "metadata": {"team": "a", "n": 3}}"#)
            XCTAssertEqual(created.status, .ok, created.raw)
            XCTAssertEqual(created.body["success"] as? Bool, true)
            let session = dataOf(created.body)
            let id = try XCTUnwrap(session["session_id"] as? String)
            XCTAssertTrue(id.hasPrefix("cap-") && id.count == 36, id)
            XCTAssertNil(session["id"], "the SDK passes session_id and id on as arguments: only one may be present")
            XCTAssertEqual(session["collection_id"] as? String, "default")
            XCTAssertEqual(session["end_user_id"] as? String, "user-1")
            XCTAssertEqual(session["status"] as? String, "created")
            XCTAssertEqual(session["callback_url"] as? String, "http://127.0.0.1:9/hook")
            XCTAssertEqual((session["metadata"] as? [String: Any])?["team"] as? String, "a")
            XCTAssertEqual((session["metadata"] as? [String: Any])?["n"] as? Int, 3)
            XCTAssertEqual((session["channels"] as? [Any])?.count, 0)
            XCTAssertEqual((session["rtstreams"] as? [Any])?.count, 0)
            XCTAssertNotNil(session["created_at"] as? String)

            let got = try await client.call(.get, "/collection/default/capture/session/\(id)")
            XCTAssertEqual(got.status, .ok, got.raw)
            XCTAssertEqual(dataOf(got.body)["session_id"] as? String, id)

            let second = try await client.call(.post, "/collection/default/capture/session", json: #"{"end_user_id": "user-2"}"#)
            let secondId = try XCTUnwrap(dataOf(second.body)["session_id"] as? String)
            let all = try await client.call(.get, "/collection/default/capture/session")
            let listed = (dataOf(all.body)["sessions"] as? [[String: Any]] ?? []).compactMap { $0["session_id"] as? String }
            XCTAssertEqual(Set(listed), [id, secondId])
            let created2 = try await client.call(.get, "/collection/default/capture/session?status=created")
            XCTAssertEqual((dataOf(created2.body)["sessions"] as? [Any])?.count, 2)
            let active = try await client.call(.get, "/collection/default/capture/session?status=active")
            XCTAssertEqual((dataOf(active.body)["sessions"] as? [Any])?.count, 0)
            let bad = try await client.call(.get, "/collection/default/capture/session?status=dancing")
            XCTAssertEqual(bad.status, .badRequest)
            assertErrorBody(bad.body, "INVALID_REQUEST")

            // Collections keep sessions apart.
            let other = try await client.call(.get, "/collection/c-other/capture/session")
            XCTAssertEqual((dataOf(other.body)["sessions"] as? [Any])?.count, 0)
            let wrongCollection = try await client.call(.get, "/collection/c-other/capture/session/\(id)")
            XCTAssertEqual(wrongCollection.status, .notFound)
        }
    }

    func testAPIKeysTokensAndAccounts() async throws {
        let harness = EndpointHarness()
        defer { harness.remove() }
        let (app, _) = try harness.build()
        nonisolated(unsafe) var issued: [String] = []  // written inside the test closure, read after it
        try await app.serve { client in
            let path = "/collection/default/capture/session"
            for key in [nil, "", "wrong-key-wrong-key"] as [String?] {
                let response = try await client.call(.get, path, key: key)
                XCTAssertEqual(response.status, .unauthorized, "key \(key ?? "none")")
                assertErrorBody(response.body, "UNAUTHORIZED")
            }
            let token = try await client.call(.post, "/capture/session/token", json: #"{"expires_in": 600}"#)
            XCTAssertEqual(token.status, .ok, token.raw)
            let tokenText = try XCTUnwrap(dataOf(token.body)["token"] as? String)
            XCTAssertGreaterThanOrEqual(tokenText.count, 40, "at least 128 random bits")
            XCTAssertEqual(dataOf(token.body)["expires_in"] as? Int, 600)
            let defaulted = try await client.call(.post, "/capture/session/token", json: "")
            XCTAssertEqual(dataOf(defaulted.body)["expires_in"] as? Int, 86400, defaulted.raw)
            issued = [tokenText, try XCTUnwrap(dataOf(defaulted.body)["token"] as? String)]
            for bad in [#"{"expires_in": 0}"#, #"{"expires_in": -5}"#, #"{"expires_in": "soon"}"#, #"{"expires_in": 99999999999}"#] {
                let response = try await client.call(.post, "/capture/session/token", json: bad)
                XCTAssertEqual(response.status, .badRequest, bad)
                assertErrorBody(response.body, "INVALID_REQUEST")
            }
            // A number no Int holds: its field is named (it is valid JSON, not "not a valid JSON object").
            for huge in [#"{"expires_in": 1e300}"#, #"{"expires_in": 1.5}"#, #"{"expires_in": 99999999999999999999999}"#] {
                let response = try await client.call(.post, "/capture/session/token", json: huge)
                XCTAssertEqual(response.status, .badRequest, huge)
                assertErrorBody(response.body, "INVALID_REQUEST")
                XCTAssertEqual(response.body["message"] as? String, "the field 'expires_in' is not a whole number in range", huge)
            }
            // What two readers could read differently is refused, not read the lenient way (Foundation
            // took the first of two names: this minted a 60 s token where a reader taking the last saw -5).
            for ambiguous in [#"{"expires_in": 60, "expires_in": -5}"#, #"{"expires_in": 60,}"#, #"{"expires_in": 60} {}"#] {
                let response = try await client.call(.post, "/capture/session/token", json: ambiguous)
                XCTAssertEqual(response.status, .badRequest, ambiguous)
                assertErrorBody(response.body, "INVALID_REQUEST")
                XCTAssertTrue((response.body["message"] as? String ?? "").hasPrefix("the body is not valid JSON: "), ambiguous)
            }

            // A client token can do nothing on REST: not read, not create, not mint tokens.
            for (method, uri, body) in [(HTTPRequest.Method.get, path, nil), (.post, path, #"{"end_user_id":"x"}"#),
                                        (.post, "/capture/session/token", "{}")] as [(HTTPRequest.Method, String, String?)] {
                let response = try await client.call(method, uri, key: tokenText, json: body)
                XCTAssertEqual(response.status, .forbidden, "\(method) \(uri)")
                assertErrorBody(response.body, "FORBIDDEN")
            }

            // Account B sees none of account A's sessions.
            let created = try await client.call(.post, path, json: #"{"end_user_id": "a-user"}"#)
            let id = try XCTUnwrap(dataOf(created.body)["session_id"] as? String)
            let asB = try await client.call(.get, "\(path)/\(id)", key: EndpointHarness.keyB)
            XCTAssertEqual(asB.status, .notFound)
            assertErrorBody(asB.body, "NOT_FOUND")
            let listB = try await client.call(.get, path, key: EndpointHarness.keyB)
            XCTAssertEqual((dataOf(listB.body)["sessions"] as? [Any])?.count, 0)

            // Revocation is by account too.
            let revokeAsB = try await client.call(.post, "/capture/session/token/revoke", key: EndpointHarness.keyB,
                                                  json: "{\"token\": \"\(tokenText)\"}")
            XCTAssertEqual(revokeAsB.status, .notFound)
            let revoke = try await client.call(.post, "/capture/session/token/revoke", json: "{\"token\": \"\(tokenText)\"}")
            XCTAssertEqual(revoke.status, .ok, revoke.raw)
            XCTAssertEqual(dataOf(revoke.body)["revoked"] as? Bool, true)
        }
        // Stored only as a hash: the token's text is nowhere in the database files.
        let files = try FileManager.default.contentsOfDirectory(atPath: harness.dataDirectory).filter { $0.hasPrefix("endpoint.sqlite") }
        XCTAssertFalse(files.isEmpty)
        let database = try DatabaseQueue(path: harness.dataDirectory + "/endpoint.sqlite")
        let hashes = try await database.read { db in try String.fetchAll(db, sql: "SELECT hash FROM tokens") }
        XCTAssertEqual(hashes.count, 2)
        XCTAssertTrue(hashes.allSatisfy { $0.count == 64 })
        XCTAssertEqual(issued.count, 2)
        for name in files {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: harness.dataDirectory + "/" + name))
            for token in issued {
                XCTAssertNil(bytes.range(of: Data(token.dropFirst(4).prefix(16).utf8)), "\(name) holds a token")
            }
        }
    }

    func testBadRequestsGetTheStandardErrorBody() async throws {
        let harness = EndpointHarness { $0.maxRequestBodyBytes = 4096 }
        defer { harness.remove() }
        let (app, _) = try harness.build()
        try await app.serve { client in
            let path = "/collection/default/capture/session"
            let cases: [(String, HTTPResponse.Status, String)] = [
                ("{not json", .badRequest, "INVALID_REQUEST"),
                ("[1,2,3]", .badRequest, "INVALID_REQUEST"),
                ("{}", .badRequest, "INVALID_REQUEST"),
                (#"{"end_user_id": 5}"#, .badRequest, "INVALID_REQUEST"),
                (#"{"end_user_id": ""}"#, .badRequest, "INVALID_REQUEST"),
                (#"{"end_user_id": "u", "metadata": [1]}"#, .badRequest, "INVALID_REQUEST"),
                (#"{"end_user_id": "u", "callback_url": "file:///etc/passwd"}"#, .badRequest, "INVALID_REQUEST"),
                (#"{"end_user_id": "u", "callback_url": "not a url"}"#, .badRequest, "INVALID_REQUEST"),
                (#"{"end_user_id": "a\u0000b"}"#, .badRequest, "INVALID_REQUEST"),
                ("{\"end_user_id\": \"\(String(repeating: "x", count: 8000))\"}", .contentTooLarge, "PAYLOAD_TOO_LARGE"),
            ]
            for (body, status, code) in cases {
                let response = try await client.call(.post, path, json: body)
                XCTAssertEqual(response.status, status, String(body.prefix(60)))
                assertErrorBody(response.body, code)
            }
            let text = try await client.call(.post, path, json: #"{"end_user_id": "u"}"#, headers: [.contentType: "text/plain"])
            XCTAssertEqual(text.status, .unsupportedMediaType)
            assertErrorBody(text.body, "UNSUPPORTED_MEDIA_TYPE")

            for uri in ["/collection/default/capture/session/cap-00000000000000000000000000000000",
                        "/collection/default/capture/session/..%2F..%2Fendpoint.sqlite",
                        "/collection/default/capture/session/cap-..%2f..%2f",
                        "/collection/..%2F..%2Ftmp/capture/session",
                        "/collection/default/capture/session/%00",
                        "/no/such/route", "/hls/cap-x/../../endpoint.sqlite/index.m3u8"] {
                let response = try await client.call(.get, uri)
                XCTAssertEqual(response.status, .notFound, uri)
                assertErrorBody(response.body, "NOT_FOUND")
            }
            let health = try await client.call(.get, "/health", key: nil)
            XCTAssertEqual(health.status, .ok)
        }
        // Nothing escaped the data directory and nothing was created for the bad ids.
        let entries = try FileManager.default.contentsOfDirectory(atPath: harness.dataDirectory)
        XCTAssertEqual(Set(entries).subtracting(["endpoint.sqlite", "endpoint.sqlite-wal", "endpoint.sqlite-shm"]), [])
    }

    /// Bodies declared well over the limit (2, 12 and 100 MB against 1 MiB) are answered 413
    /// from their heads while the client is still sending, and the connection is closed; a
    /// server that read up to the limit and stopped would never answer (RawSocket gives up
    /// after 10 s), the client still sending.
    /// A client's mistake is not the endpoint's error: nothing is logged at `error`.
    func testBodiesDeclaredOverTheLimitAreRefusedFromTheHead() async throws {
        let harness = EndpointHarness()
        defer { harness.remove() }
        let errors = KeptLog(from: .error)
        let (app, _) = try harness.build(keepingErrorsIn: errors)
        try await app.serve { client in
            let port = try XCTUnwrap(client.port)
            let slice = [UInt8](repeating: 0x20, count: 256 << 10)
            for megabytes in [2, 12, 100] {
                let socket = try RawSocket(port: port)
                _ = socket.send(Array(("POST /collection/default/capture/session HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    + "x-access-token: \(EndpointHarness.keyA)\r\ncontent-type: application/json\r\n"
                    + "content-length: \(megabytes << 20)\r\n\r\n").utf8))
                _ = socket.send(slice)   // a quarter of a MiB of it, then nothing more
                let head = socket.readHead()
                XCTAssertTrue(head.hasPrefix("HTTP/1.1 413"), "\(megabytes) MB: \(head)")
                XCTAssertTrue(head.lowercased().contains("connection: close"), head)
                let rest = String(decoding: socket.readAll(), as: UTF8.self)
                XCTAssertTrue(rest.contains("PAYLOAD_TOO_LARGE"), rest)
            }
            let health = try await client.call(.get, "/health", key: nil)
            XCTAssertEqual(health.status, .ok)
            let small = try await client.call(.post, "/collection/default/capture/session", json: #"{"end_user_id": "after"}"#)
            XCTAssertEqual(small.status, .ok, small.raw)
        }
        XCTAssertEqual(errors.all, [], "logged at error level for the refused requests")
    }

    func testTheEventSocketURLNamesATicketForTheCollection() async throws {
        let harness = EndpointHarness { $0.publicBaseURL = "http://127.0.0.1:8470/" }
        defer { harness.remove() }
        let (app, _) = try harness.build()
        try await app.serve { client in
            let response = try await client.call(.get, "/collection/default/websocket")
            XCTAssertEqual(response.status, .ok, response.raw)
            let url = try XCTUnwrap(dataOf(response.body)["websocket_url"] as? String)
            XCTAssertTrue(url.hasPrefix("ws://127.0.0.1:8470/collection/default/events?ticket=wst_"), url)
            let unauthorized = try await client.call(.get, "/collection/default/websocket", key: nil)
            XCTAssertEqual(unauthorized.status, .unauthorized)
        }
    }
}
