import NIOCore

/// The backend's side of an exchange: its response head is parsed and written anew for the client, and its
/// body's bytes go on as they came until `HTTPBodyFramer` says it has ended.
extension HTTPFrontendHandler {
    /// Response bodies up to this size are copied behind their head so both leave in one write.
    static let coalesceLimit = 2048

    private enum ResponseHeadOutcome {
        case incomplete
        case invalid(HTTPFramingError)
        case informational(length: Int)
        case final(length: Int, HTTP1ResponseHead)
    }

    func upstreamRead(_ connection: UpstreamHandler, _ bytes: ByteBuffer) {
        guard connection === upstream else { return }
        if responseInbound == nil {
            responseInbound = bytes
        } else {
            var bytes = bytes
            responseInbound!.writeBuffer(&bytes)
        }
        while upstream === connection, let bytes = responseInbound, bytes.readableBytes > 0 {
            if responseStarted {
                readResponseBody()
            } else if !readResponseHead() {
                break
            }
        }
        if responseInbound?.readableBytes == 0 { responseInbound = nil }
    }

    func upstreamReadComplete(_ connection: UpstreamHandler) {
        guard connection === upstream else { return }
        writePendingHead()
        if clientNeedsFlush {
            clientNeedsFlush = false
            context?.flush()
        }
    }

    func upstreamBecameWritable(_ connection: UpstreamHandler) {
        if connection === upstream { resumeClientReads() }
    }

    func upstreamClosed(_ connection: UpstreamHandler) {
        guard connection === upstream else { return }
        if !responseStarted {
            attemptFailed(nothingSent: false)
        } else if responseFramer.endsAtClose {
            // A response without a length ends with its connection.
            upstreamReusable = false
            writePendingHead()
            exchangeEnded()
        } else {
            responseBroken()
        }
    }

    /// Parses a response head at the start of `responseInbound`. False when more bytes are needed or the
    /// exchange is over.
    private func readResponseHead() -> Bool {
        let outcome = responseInbound!.withUnsafeReadableBytes { bytes -> ResponseHeadOutcome in
            do throws(HTTPFramingError) {
                guard let length = try responseParser.parse(bytes) else { return .incomplete }
                let head = try HTTP1ResponseHead(responseParser, bytes, requestMethod: method)
                if head.isInformational {
                    // 100 Continue and the like go on to an HTTP/1.1 client; a final head follows.
                    if !clientIsHTTP10 {
                        clientOut.clear()
                        HTTPHeadWriter.writeResponse(responseParser, head, bytes, connection: .none,
                                                     dropTransferEncoding: false, into: &clientOut)
                        clientOutPending = true
                        writePendingHead()
                    }
                    return .informational(length: length)
                }
                dechunk = clientIsHTTP10 && head.framing == .chunked
                closeAfterResponse = !clientKeepAlive || phase != .sent || head.framing == .untilClose || dechunk
                upstreamReusable = head.keepAlive
                let connection: HTTPHeadWriter.ConnectionField =
                    closeAfterResponse ? .close : (clientIsHTTP10 ? .keepAlive : .none)
                clientOut.clear()
                HTTPHeadWriter.writeResponse(responseParser, head, bytes, connection: connection,
                                             dropTransferEncoding: dechunk, into: &clientOut)
                return .final(length: length, head)
            } catch {
                return .invalid(error)
            }
        }
        switch outcome {
        case .incomplete:
            return false
        case .invalid(let error):
            responseInvalid(error)
            return false
        case .informational(let length):
            responseInbound!.moveReaderIndex(forwardBy: length)
            responseParser.reset()
            return true
        case .final(let length, let head):
            responseInbound!.moveReaderIndex(forwardBy: length)
            responseParser.reset()
            responseStarted = true
            setDeadline(.none)
            lastClockRead = NIODeadline.now()
            let now = lastClockRead.uptimeNanoseconds / 1_000
            if let backend {
                slot?.stats.latency.record(micros: now &- dispatchedMicros)
                if head.status == 502 || head.status == 503 || head.status == 504 {
                    service.balancer.failed(backend, nowMillis: now / 1000)
                } else {
                    service.balancer.succeeded(backend, nowMillis: now / 1000)
                }
            }
            responseFramer = HTTPBodyFramer(head.framing)
            clientOutPending = true
            if responseFramer.isDone {
                responseEnded()
                return false
            }
            return true
        }
    }

    /// Forwards the body bytes at the start of `responseInbound`.
    private func readResponseBody() {
        do throws(HTTPFramingError) {
            if dechunk {
                while responseInbound!.readableBytes > 0, !responseFramer.isDone {
                    let span = try responseInbound!.withUnsafeReadableBytes { bytes throws(HTTPFramingError) in
                        try responseFramer.next(bytes)
                    }
                    let part = responseInbound!.readSlice(length: span.count)!
                    if span.isPayload { writeToClient(part) }
                }
            } else {
                let count = try responseInbound!.withUnsafeReadableBytes { bytes throws(HTTPFramingError) in
                    try responseFramer.consume(bytes)
                }
                if count > 0 { writeToClient(responseInbound!.readSlice(length: count)!) }
            }
        } catch {
            responseBroken()
            return
        }
        if responseFramer.isDone {
            // Bytes after the end of a response the backend was not asked for: the connection is out of step.
            if responseInbound!.readableBytes > 0 { upstreamReusable = false }
            responseEnded()
        }
    }

    private func writeToClient(_ part: ByteBuffer) {
        slot?.stats.bytesIn &+= UInt64(part.readableBytes)
        if clientOutPending && part.readableBytes <= Self.coalesceLimit {
            var part = part
            clientOut.writeBuffer(&part)
            return
        }
        writePendingHead()
        context?.write(wrapOutboundOut(part), promise: nil)
        clientNeedsFlush = true
    }

    /// Writes the head waiting in `clientOut` (with any small body that joined it).
    func writePendingHead() {
        guard clientOutPending else { return }
        clientOutPending = false
        clientNeedsFlush = true
        context?.write(wrapOutboundOut(clientOut), promise: nil)
    }

    private func responseEnded() {
        if clientOutPending && !clientNeedsFlush {
            // The whole response in one buffer: written and flushed in one pass through the pipeline.
            clientOutPending = false
            context?.writeAndFlush(wrapOutboundOut(clientOut), promise: nil)
        } else {
            writePendingHead()
        }
        exchangeEnded()
    }

    /// The backend's response head is malformed: like a failure before the response (the request may be replayed).
    private func responseInvalid(_ error: HTTPFramingError) {
        guard abandonAttempt() != nil else { return }
        if method.isIdempotent, replayable, tried.count <= service.settings.retries {
            slot?.stats.retries &+= 1
            dispatch()
        } else {
            respondError(502, "the backend of \(service.name) sent an invalid response: \(error.message)")
        }
    }

    /// Cut or malformed mid-response: nothing can be replayed to this client; its connection ends after what
    /// it already has.
    private func responseBroken() {
        if let backend {
            service.balancer.failed(backend, nowMillis: Clock.nowMillis())
            slot?.stats.errors &+= 1
        }
        dropAttempt()
        responseInbound = nil
        writePendingHead()
        closeAfterWrites()
    }
}
