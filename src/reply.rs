//! Responses the gateway makes itself for a failure: the one place an [`Error`](crate::error)
//! becomes a status, an `x-switchyard-error` reason and a short body (README, "Errors the
//! gateway makes"). Kept apart from `error` so that error types stay a leaf and `body` can use
//! them.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::Response;

use crate::body::{self, Body};
use crate::error::{cause_ref, ErrorReason, RateLimited, Reason};

/// The one place a failure becomes a response: its reason, status, and for 429/503 a
/// `retry-after` in whole seconds (at least 1).
pub(crate) fn response_for(err: &(dyn std::error::Error + 'static)) -> Response<Body> {
    let reason = Reason::of(err);
    let mut res = error_response(reason);
    if let Some(r) = cause_ref::<RateLimited>(err) {
        let secs = r.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    res
}

/// A gateway-made response for `reason` (status, `x-switchyard-error`, short body).
pub(crate) fn error_response(reason: Reason) -> Response<Body> {
    let status = reason.status();
    let text = format!("{} {}\n", status.as_u16(), reason.as_str());
    let mut res = Response::new(body::full(Bytes::from(text)));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert("x-switchyard-error", HeaderValue::from_static(reason.as_str()));
    if matches!(reason, Reason::RateLimited | Reason::Overloaded) {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if reason == Reason::MethodNotAllowed {
        // RFC 9110 section 15.5.6: a 405 lists what is allowed; routes decide the rest.
        h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS"));
    }
    if reason == Reason::RequestTimeout {
        // The request body was cut short: this connection cannot carry another request.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    // A 401 must say which scheme would be accepted (RFC 9110, section 15.5.2).
    if reason == Reason::Unauthorized {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    res.extensions_mut().insert(ErrorReason(reason));
    res
}
