"""The verification service: policy around the core. No gRPC in here.

A Verify flows one way:

    caller rate -> purpose, frame count and headers -> ID number and name -> keyed ID (once)
    -> caller's distinct-identity velocity -> identity lockout (attempt counted before it runs)
    -> challenge (required by purpose? valid, bound, unexpired, unused? -> the actions to check)
    -> the reference (lookup, name check, decrypt; none for an unknown ID or a wrong name)
    -> core: pipeline.evaluate(frames, reference, actions) -> Decision
    -> verdict and caller reason -> settle the attempt -> audit

Enroll: reference images checked -> keyed ID -> core: pipeline.templates(images)
-> duplicate screen against the gallery -> store -> audit.

Callers are authenticated and their scopes checked by the transport before any of this runs.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from idv.audit import AuditLog
from idv.capture_integrity import ReplayGuard
from idv.challenges import ChallengeIssuer, ChallengePolicy, satisfies
from idv.credentials import CheckInCredentials, IssuedCredential
from idv.errors import AlreadyEnrolled, DuplicateFace, InvalidRequest, NotServing, TemplateMismatch, Throttled
from idv.identity import IdentityError, normalise_name, parse_id_number
from idv.pipeline import Budget, CheckedBurst, ClaimedReference, Decision, LightRequest, Screening, VerificationPipeline
from idv.references import ReferenceVault
from idv.security.terminals import AttestationCheck, TerminalAttestation
from idv.state.base import StoredChallenge
from idv.throttle import Throttle
from idv.verdicts import CALLER_REASON, Purpose, Reason, TrueReason, Verdict
from liveness.light import LightStep

log = logging.getLogger(__name__)

# Outcomes that say something about the claimed identity count as failed attempts;
# capture problems (no face, blur) do not, so a clumsy user is not locked out.
_FAILED_ATTEMPT = frozenset({
    TrueReason.FACE_MISMATCH, TrueReason.NO_REFERENCE, TrueReason.NAME_MISMATCH, TrueReason.LIVENESS_FAILED,
    TrueReason.CHALLENGE_FAILED, TrueReason.CHALLENGE_INVALID, TrueReason.IMPERSONATION_SUSPECTED,
    TrueReason.REFERENCE_INVALID,  # counted like the non-match it is answered as
    TrueReason.FRAME_REPLAYED, TrueReason.NEAR_DUPLICATE_FRAMES, TrueReason.CAPTURE_TIMING,  # issue 14
    # A signature that does not verify is an attack on this identity; a missing one (required by the
    # purpose) is the caller's unattested terminal, nothing the person did, so it is not counted.
    TrueReason.ATTESTATION_INVALID,
})
# Decisions reached by comparing with the (possibly decoy) reference: an identity problem
# found before the comparison is the answer then, and only then.
_COMPARED = frozenset({TrueReason.VERIFIED, TrueReason.FACE_MISMATCH, TrueReason.IMPERSONATION_SUSPECTED})


@dataclass(frozen=True)
class VerifyCommand:
    id_number: str
    name: str
    purpose: Purpose | None
    frames: tuple[bytes, ...]
    challenge_id: str = ""
    caller: str = "anonymous"
    # Issue 14: each frame's capture time in ms from the light sequence's start (light challenges).
    timestamps_ms: tuple[float, ...] = ()
    # Sessions: seconds from the session's opening to its upload; the frames' times must fit in it
    # (0: no session, not checked).
    session_window_seconds: float = 0.0
    # Issue 14, attested terminals: the terminal's id and signature (None: not sent), and the nonce it
    # signed: the challenge id for a Verify, the capture token for a session upload (set by the transport).
    attestation: TerminalAttestation | None = None
    attestation_nonce: str = ""


@dataclass(frozen=True)
class EnrollCommand:
    id_number: str
    name: str
    reference_images: tuple[bytes, ...]
    replace: bool = False
    caller: str = "anonymous"


@dataclass(frozen=True)
class VerifyOutcome:
    request_id: str
    verdict: Verdict
    reason: Reason
    true_reason: TrueReason  # audit only
    id_key: str  # keyed hash of the ID, audit only
    timings_ms: dict[str, float] = field(default_factory=dict)
    credential: IssuedCredential | None = None  # a check-in code, on PASS for an issuing purpose
    evidence: dict[str, float] = field(default_factory=dict)  # audit only (light challenge)
    # The light sequence the redeemed challenge issued ((colour, duration_ms) steps; empty: none). Never
    # sent to a caller; record mode (idv.http.recorder) saves it beside the capture it was flashed for.
    light_sequence: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class EnrollOutcome:
    request_id: str
    template_count: int
    flagged_for_review: bool = False
    duplicate_of: str = ""  # keyed hash of the identity the face also matched; audit only
    id_key: str = ""  # keyed hash of the enrolled ID; audit only


@dataclass(frozen=True)
class Claim:
    """A validated Verify: the canonical identity and its keyed hash, derived once."""

    canonical_id: str
    name: str
    id_key: str
    purpose: Purpose
    burst: CheckedBurst  # the frames, their headers parsed once


class VerificationService:
    def __init__(
        self,
        pipeline: VerificationPipeline,
        vault: ReferenceVault,
        throttle: Throttle,
        audit: AuditLog,
        challenge_policy: ChallengePolicy,
        challenges: ChallengeIssuer | None = None,
        screening: Screening | None = None,
        fingerprints: dict[str, str] | None = None,
        reference_max_age_seconds: float = 0.0,
        clock: Callable[[], float] = time.time,
        credentials: CheckInCredentials | None = None,  # check-in codes on PASS
        security_level: str = "",  # the level a redeemed credential reports
        replay_guard: ReplayGuard | None = None,
        attestation: AttestationCheck | None = None,
    ):
        self._pipeline = pipeline
        self._vault = vault
        self._throttle = throttle
        self._audit = audit
        self._challenge_required = challenge_policy.required_purposes
        self._challenge_policy = challenge_policy
        self._challenges = challenges
        self._screening = screening
        self._fingerprints = dict(fingerprints or {})
        # Retention: a reference older than this (0: no limit) answers REENROLMENT_REQUIRED to a
        # face that matches it; any other face hears the usual NOT_VERIFIED.
        self._reference_max_age = reference_max_age_seconds
        self._clock = clock
        self._credentials = credentials
        self._security_level = security_level
        self._replay_guard = replay_guard  # frames presented before fail
        self._attestation = attestation  # terminal signatures, checked before any decode

    @property
    def fingerprints(self) -> dict[str, str]:
        """The models this service decides with (recorded in every audit record)."""
        return dict(self._fingerprints)

    def id_key(self, id_number: str) -> str:
        """The keyed hash the stores, counters and audit know an ID number by."""
        return self._vault.id_key(canonical_id_number(id_number))

    # ------------------------------------------------------------------ verify
    def verify(self, command: VerifyCommand, budget: Budget) -> VerifyOutcome:
        self._throttle.admit_caller(command.caller)
        claim = self.validate(command)
        try:
            self._throttle.admit_identity_for_caller(command.caller, claim.id_key)
            ticket = self._throttle.begin(claim.id_key)
        except Throttled as refused:
            self._audit_refusal(command, claim.id_key, refused)
            raise
        try:
            outcome = self._decide(command, claim, budget)
        except BaseException:
            self._throttle.neutral(ticket)  # errors (deadline, store down) are not the person's failure
            raise
        if outcome.true_reason is TrueReason.VERIFIED:
            self._throttle.succeeded(ticket)
        elif outcome.true_reason not in _FAILED_ATTEMPT:
            self._throttle.neutral(ticket)  # a failure stays counted: it was counted when the attempt began
        self._audit_decision(command, outcome)
        if outcome.verdict is Verdict.PASS and self._credentials is not None \
                and self._credentials.issues_for(claim.purpose):
            # Issue 18: the PASS is audited first; the code stands for exactly that decision.
            level = self._security_level + ("+active" if command.challenge_id else "")
            credential = self._credentials.issue(claim.canonical_id, claim.name, claim.id_key, claim.purpose,
                                                 command.caller, level, outcome.request_id)
            outcome = dataclasses.replace(outcome, credential=credential)
        return outcome

    def validate(self, command: VerifyCommand) -> Claim:
        """Cheap checks before any pixel is decoded: purpose, counts, headers, ID number, name."""
        if command.purpose is None:
            raise InvalidRequest("purpose is required (REGISTRATION, LICENCE_RENEWAL or CHECK_IN)",
                                 "MISSING_PURPOSE")
        burst = self._pipeline.check_burst(command.frames, with_challenge=bool(command.challenge_id))
        parsed = parse_identity(command.id_number, command.name)
        return Claim(parsed.canonical, parsed.name, self._vault.id_key(parsed.canonical), command.purpose, burst)

    def _decide(self, command: VerifyCommand, claim: Claim, budget: Budget) -> VerifyOutcome:
        request_id = str(uuid.uuid4())
        actions: tuple[str, ...] | None = None
        light: LightRequest | None = None
        if command.challenge_id:
            challenge = None
            if self._challenges is not None:
                challenge = self._challenges.redeem_challenge(command.challenge_id, command.caller, claim.id_key)
            # Issue 14: a challenge lacking what the purpose's kind requires (light, actions) is no good here.
            if challenge is None or not satisfies(challenge, self._challenge_policy.kind_for(claim.purpose)):
                return _outcome(request_id, TrueReason.CHALLENGE_INVALID, claim.id_key, {})
            actions = challenge.actions or None
            if challenge.light:
                light = LightRequest(tuple(LightStep(c, d) for c, d in challenge.light), command.timestamps_ms)
        elif claim.purpose in self._challenge_required:
            return _outcome(request_id, TrueReason.CHALLENGE_REQUIRED, claim.id_key, {})
        outcome = self._judge(command, claim, budget, request_id, actions, light)
        if light is None:
            return outcome
        return dataclasses.replace(outcome, light_sequence=tuple((s.colour, s.duration_ms) for s in light.sequence))

    def _judge(self, command: VerifyCommand, claim: Claim, budget: Budget, request_id: str,
               actions: tuple[str, ...] | None, light: LightRequest | None) -> VerifyOutcome:
        """After the challenge: attestation, timing, replay, reference, core."""
        if self._attestation is not None:
            # Before the replay memory and any decode: hashing the frames' bytes is all it costs.
            if command.attestation is not None:
                budget.check("attestation")
            problem = self._attestation.problem(command.caller, claim.purpose.value, command.attestation_nonce,
                                                command.frames, command.timestamps_ms, command.attestation)
            if problem is not None:
                return _outcome(request_id, TrueReason(problem), claim.id_key, {})
        stamps = command.timestamps_ms
        if command.session_window_seconds > 0 and stamps and (
                any(b <= a for a, b in zip(stamps, stamps[1:]))
                or (stamps[-1] - stamps[0]) / 1000.0 > command.session_window_seconds):
            # Frames taken before the session existed (a capture prepared in advance): not this session's.
            return _outcome(request_id, TrueReason.CAPTURE_TIMING, claim.id_key, {})
        if self._replay_guard is not None:
            budget.check("replay check")
            if self._replay_guard.replayed(command.frames):
                return _outcome(request_id, TrueReason.FRAME_REPLAYED, claim.id_key, {})

        budget.check("reference lookup")
        started = time.perf_counter()
        record = self._vault.lookup(claim.id_key)
        identity_problem: TrueReason | None = None
        templates: np.ndarray | None = None
        if record is None:
            identity_problem = TrueReason.NO_REFERENCE
        elif not self._vault.name_matches(record, claim.name):
            identity_problem = TrueReason.NAME_MISMATCH
        else:
            try:
                templates = self._vault.decrypt(record, self._pipeline.recognizer_fingerprint,
                                                self._pipeline.dimension).templates
            except TemplateMismatch as problem:
                if problem.reason != "REFERENCE_INVALID":
                    raise  # another recognizer's template: the operator must re-enrol (FAILED_PRECONDITION)
                # Undecryptable (altered, or this node's keys differ): a non-match like any other,
                # so the answer does not single out enrolled IDs; the audit says why.
                log.warning("an enrolled template failed its integrity check")
                identity_problem = TrueReason.REFERENCE_INVALID
        lookup_ms = (time.perf_counter() - started) * 1000.0
        try:
            decision: Decision = self._pipeline.evaluate(claim.burst, ClaimedReference(claim.id_key, templates),
                                                         actions, budget, light=light)
        finally:
            if templates is not None:
                templates.fill(0)
        true_reason = decision.true_reason
        if identity_problem is not None and true_reason in _COMPARED:
            true_reason = identity_problem  # answered like a face mismatch (same caller reason)
        elif true_reason is TrueReason.VERIFIED and record is not None and self._expired(record.enrolled_at):
            true_reason = TrueReason.REFERENCE_EXPIRED
        return _outcome(request_id, true_reason, claim.id_key, {"lookup": lookup_ms, **decision.timings_ms},
                        decision.evidence)

    def _expired(self, enrolled_at: float) -> bool:
        return self._reference_max_age > 0 and self._clock() - enrolled_at > self._reference_max_age

    def _audit_decision(self, command: VerifyCommand, outcome: VerifyOutcome) -> None:
        self._audit.append({
            "event": "verify",
            "request_id": outcome.request_id,
            "caller": command.caller,
            "purpose": command.purpose.value if command.purpose else "",
            "id_key": outcome.id_key,
            "verdict": outcome.verdict.value,
            "true_reason": outcome.true_reason.value,
            "models": self._fingerprints,
            "timings_ms": {k: round(v, 2) for k, v in outcome.timings_ms.items()},
            "evidence": outcome.evidence,  # issue 14: light correlation/strength, audit only
        })

    def _audit_refusal(self, command: VerifyCommand, id_key: str, error: Throttled) -> None:
        self._audit.append({
            "event": "verify_refused",
            "request_id": str(uuid.uuid4()),
            "caller": command.caller,
            "purpose": command.purpose.value if command.purpose else "",
            "id_key": id_key,
            "verdict": "REFUSED",
            "true_reason": error.reason,
        })

    # ------------------------------------------------------------------ enroll
    def enroll(self, command: EnrollCommand, budget: Budget) -> EnrollOutcome:
        request_id = str(uuid.uuid4())
        images = self._pipeline.check_references(command.reference_images)
        parsed = parse_identity(command.id_number, command.name)
        id_key = self._vault.id_key(parsed.canonical)
        templates = self._pipeline.templates(images, budget)
        try:
            duplicate_of = ""
            if self._screening is None:
                stored = self._vault.enroll(id_key, parsed.name, templates, self._pipeline.recognizer_fingerprint,
                                            command.replace)
            else:
                budget.check("screening")
                # Serialised across every replica of the store: the duplicate check (which first
                # reads every committed change from the store) and the put cannot interleave with
                # another replica's, so one face enrolled at once under two IDs is caught.
                with self._vault.store.enrolment_lock(budget.remaining()):
                    try:
                        duplicate_of = self._screening.before_enroll(id_key, templates)
                    except DuplicateFace as refused:
                        self._audit_duplicate(command, request_id, id_key, refused)
                        raise
                    stored = self._vault.enroll(id_key, parsed.name, templates,
                                                self._pipeline.recognizer_fingerprint, command.replace)
                    if stored:
                        self._screening.after_enroll(id_key, templates)
            if not stored:
                raise AlreadyEnrolled("this identity is already enrolled; set replace to overwrite its reference")
        finally:
            templates.fill(0)
        outcome = EnrollOutcome(request_id, len(command.reference_images), bool(duplicate_of), duplicate_of, id_key)
        record: dict[str, object] = {
            "event": "enroll",
            "request_id": request_id,
            "caller": command.caller,
            "id_key": id_key,
            "templates": outcome.template_count,
            "models": self._fingerprints,
        }
        if outcome.flagged_for_review:
            record["flagged_for_review"] = True
            record["duplicate_of"] = outcome.duplicate_of
        self._audit.append(record)
        self._throttle.reset_identity(id_key)  # a fresh reference starts with a clean slate
        return outcome

    def _audit_duplicate(self, command: EnrollCommand, request_id: str, id_key: str, refused: DuplicateFace) -> None:
        # One face under two ID numbers (一人多号): the caller hears DUPLICATE_FACE only;
        # the audit names the other identity (keyed hash) for the review.
        self._audit.append({
            "event": "enroll_refused",
            "request_id": request_id,
            "caller": command.caller,
            "id_key": id_key,
            "reason": refused.reason,
            "duplicate_of": refused.duplicate_of,
            "models": self._fingerprints,
        })

    # ------------------------------------------------------------------ challenges
    def create_challenge(self, caller: str, id_number: str, purpose: Purpose | None = None) -> StoredChallenge:
        """Issue 14: with a purpose, the challenge holds that purpose's kind (actions, light or both)."""
        if self._challenges is None:
            raise NotServing("active challenges need the FaceMesh model, which this node has not loaded")
        self._throttle.admit_caller(caller)
        return self._challenges.issue(caller, self._vault.id_key(canonical_id_number(id_number)),
                                      kind=self._challenge_policy.kind_for(purpose))



@dataclass(frozen=True)
class ParsedIdentity:
    canonical: str
    name: str


def canonical_id_number(id_number: str) -> str:
    """The canonical ID number, or INVALID_ARGUMENT naming what is wrong (never echoing it)."""
    try:
        return parse_id_number(id_number).value
    except IdentityError as exc:
        raise InvalidRequest(exc.message, exc.reason) from None


def parse_identity(id_number: str, name: str) -> ParsedIdentity:
    """The canonical ID number and normalised name, or INVALID_ARGUMENT naming what is wrong."""
    canonical = canonical_id_number(id_number)
    try:
        return ParsedIdentity(canonical, normalise_name(name))
    except IdentityError as exc:
        raise InvalidRequest(exc.message, exc.reason) from None


def _outcome(request_id: str, true_reason: TrueReason, id_key: str, timings: dict[str, float],
             evidence: dict[str, float] | None = None) -> VerifyOutcome:
    verdict = Verdict.PASS if true_reason is TrueReason.VERIFIED else Verdict.FAIL
    return VerifyOutcome(request_id, verdict, CALLER_REASON[true_reason], true_reason, id_key, timings,
                         evidence=dict(evidence or {}))
