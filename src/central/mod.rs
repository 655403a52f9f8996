//! Central-side tools behind `relaisctl`: what an integrator starts from, and what makes the
//! whole loop testable (snapshot build, delta publish, reference ingest, fleet status).
