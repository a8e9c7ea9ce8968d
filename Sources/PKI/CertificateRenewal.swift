public import Foundation
public import X509

/// When a node renews its certificate: at a random point between 50 % and 80 % of its life, so nodes that
/// joined together do not all renew together, and a failed attempt leaves a fifth of the life for retries.
public enum CertificateRenewal {
    public static let earliestFraction = 0.5
    public static let latestFraction = 0.8

    /// The certificate's useful life: from when it was issued (its not-before minus the back-dating the CA adds
    /// for clock skew) to its not-after.
    public static func life(of certificate: Certificate) -> (start: Date, end: Date) {
        let skew = CertificateAuthority.clockSkewAllowance.timeInterval
        let start = certificate.notValidBefore + skew < certificate.notValidAfter
            ? certificate.notValidBefore + skew : certificate.notValidBefore
        return (start, certificate.notValidAfter)
    }

    /// The renewal time for `fraction` of the life (clamped to the 50–80 % window).
    public static func renewalDate(for certificate: Certificate, fraction: Double) -> Date {
        let (start, end) = life(of: certificate)
        let clamped = min(max(fraction, earliestFraction), latestFraction)
        return start + end.timeIntervalSince(start) * clamped
    }

    /// A renewal time drawn at random in the window.
    public static func renewalDate(for certificate: Certificate) -> Date {
        renewalDate(for: certificate, fraction: Double.random(in: earliestFraction...latestFraction))
    }

    /// Waits until `date`, checking the wall clock at least once a minute (so a clock step is noticed);
    /// returns early when the task is cancelled.
    public static func sleep(until date: Date) async {
        while !Task.isCancelled {
            let wait = date.timeIntervalSinceNow
            guard wait > 0 else { return }
            try? await Task.sleep(for: .milliseconds(Int(min(wait, 60) * 1000) + 1))
        }
    }
}
