-- The four next-auth tables of the T3 Drizzle template. The web app may have created
-- them first (drizzle-kit push/migrate): everything here is IF NOT EXISTS, so websurf
-- adopts existing tables as they are and creates them where missing.

CREATE TABLE IF NOT EXISTS websurfing_user (
    id varchar(255) PRIMARY KEY NOT NULL,
    name varchar(255),
    email varchar(255) NOT NULL,
    email_verified timestamp with time zone DEFAULT CURRENT_TIMESTAMP,
    image varchar(255)
);

CREATE TABLE IF NOT EXISTS websurfing_account (
    user_id varchar(255) NOT NULL,
    type varchar(255) NOT NULL,
    provider varchar(255) NOT NULL,
    provider_account_id varchar(255) NOT NULL,
    refresh_token text,
    access_token text,
    expires_at integer,
    token_type varchar(255),
    scope varchar(255),
    id_token text,
    session_state varchar(255),
    CONSTRAINT websurfing_account_provider_provider_account_id_pk
        PRIMARY KEY (provider, provider_account_id),
    CONSTRAINT websurfing_account_user_id_websurfing_user_id_fk
        FOREIGN KEY (user_id) REFERENCES websurfing_user (id)
);
CREATE INDEX IF NOT EXISTS account_user_id_idx ON websurfing_account (user_id);

CREATE TABLE IF NOT EXISTS websurfing_session (
    session_token varchar(255) PRIMARY KEY NOT NULL,
    user_id varchar(255) NOT NULL,
    expires timestamp with time zone NOT NULL,
    CONSTRAINT websurfing_session_user_id_websurfing_user_id_fk
        FOREIGN KEY (user_id) REFERENCES websurfing_user (id)
);
CREATE INDEX IF NOT EXISTS t_user_id_idx ON websurfing_session (user_id);

CREATE TABLE IF NOT EXISTS websurfing_verification_token (
    identifier varchar(255) NOT NULL,
    token varchar(255) NOT NULL,
    expires timestamp with time zone NOT NULL,
    CONSTRAINT websurfing_verification_token_identifier_token_pk PRIMARY KEY (identifier, token)
);
