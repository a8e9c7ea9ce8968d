import NIOCore

/// One side of a spliced pair of TCP connections (client and backend, on the same event loop): what one side
/// reads, the other writes. Backpressure: a side reads only while its partner can take writes. Half-close: an
/// end of input on one side becomes an end of output on the other once everything before it is written, and the
/// pair closes when both directions have ended or either side fails.
final class SpliceHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var partner: SpliceHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    private var inputEnded = false
    private var outputEnded = false
    /// Bytes read from this side's socket.
    private(set) var bytesRead: UInt64 = 0
    /// Called once when this side's channel closes.
    var onClose: ((SpliceHandler) -> Void)?

    /// What arrived before there was a partner (NIO drains a socket whose peer half-closed even without a read
    /// request), handed over at pairing.
    private var early: [ByteBuffer] = []

    /// Joins two sides; what either read while alone goes across, and held-back reads start now.
    static func pair(_ a: SpliceHandler, _ b: SpliceHandler) {
        a.partner = b
        b.partner = a
        a.handOverEarly()
        b.handOverEarly()
        a.partnerBecameWritable()
        b.partnerBecameWritable()
    }

    private func handOverEarly() {
        guard let partner else { return }
        if !early.isEmpty {
            for bytes in early { partner.write(bytes) }
            early = []
            partner.context?.flush()
        }
        if inputEnded { partner.partnerEnded() }
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        bytesRead &+= UInt64(bytes.readableBytes)
        // Flushed at once rather than at read-complete: one pass through the partner's pipeline, not two (a read
        // that filled its buffer is followed by more reads, but then each write is large anyway).
        if let partner { partner.writeAndFlush(bytes) } else { early.append(bytes) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        let partner = self.partner
        self.partner = nil
        partner?.partnerClosed()
        if let onClose { self.onClose = nil; onClose(self) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case ChannelEvent.inputClosed:
            inputEnded = true
            partner?.partnerEnded()
            if outputEnded { closeAfterQueuedWrites() }
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A reset or a failed write: this side is finished; its closing ends the partner (channelInactive).
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        isWritable = context.channel.isWritable
        if isWritable { partner?.partnerBecameWritable() }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if let partner, partner.isWritable {
            context.read()
        } else {
            pendingRead = true
        }
    }

    // MARK: Called by the partner (same event loop)

    /// Kept from writability events (asking the channel each time costs an atomic load through an existential).
    private var isWritable = true

    private func write(_ bytes: ByteBuffer) {
        context?.write(wrapOutboundOut(bytes), promise: nil)
    }

    private func writeAndFlush(_ bytes: ByteBuffer) {
        context?.writeAndFlush(wrapOutboundOut(bytes), promise: nil)
    }

    private func partnerBecameWritable() {
        guard pendingRead, let context else { return }
        pendingRead = false
        context.read()
    }

    /// The partner's input ended: end this side's output after what is already queued.
    private func partnerEnded() {
        guard let context, !outputEnded else { return }
        outputEnded = true
        let inputEnded = self.inputEnded
        context.writeAndFlush(wrapOutboundOut(ByteBuffer())).assumeIsolated().whenComplete { _ in
            if inputEnded { context.close(promise: nil) } else { context.close(mode: .output, promise: nil) }
        }
    }

    /// The partner is gone: write what is queued, then close.
    private func partnerClosed() { closeAfterQueuedWrites() }

    private func closeAfterQueuedWrites() {
        guard let context else { return }
        // Writes complete in order: once this empty one has, everything before it is on the wire.
        context.writeAndFlush(wrapOutboundOut(ByteBuffer())).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}
